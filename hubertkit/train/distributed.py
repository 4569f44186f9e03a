"""The processes of a run: one, or several under torchrun (gloo on CPUs, NCCL on GPUs)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch

from hubertkit.config import TrainConfig
from hubertkit.errors import HubertkitError

log = logging.getLogger(__name__)


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return t.tolist()

    def gather(self, value) -> list:
        """Every process's ``value`` (any picklable object), in rank order (a collective call)."""
        if self.world == 1:
            return [value]
        every: list = [None] * self.world
        torch.distributed.all_gather_object(every, value)
        return every

    def check_replicas(self, model: torch.nn.Module) -> None:
        """Every process must hold the same weights after training (DDP's contract)."""
        if self.world == 1:
            return
        digest = torch.stack([torch.stack([p.double().sum(), p.double().pow(2).sum()]) for p in model.parameters()]).flatten()
        gathered = [torch.empty_like(digest) for _ in range(self.world)]
        torch.distributed.all_gather(gathered, digest.to(self.device))
        if not all(torch.equal(gathered[0], g) for g in gathered[1:]):
            raise HubertkitError("model replicas differ between processes after training")
        if self.main:
            log.info("model replicas identical on all %d processes", self.world)


def shard_or_replicate(model: torch.nn.Module, layers, dist: Distributed, sharded: bool,
                       find_unused_parameters: bool) -> torch.nn.parallel.DistributedDataParallel | None:
    """Spread ``model`` over the processes: sharded in place (FSDP: parameters, gradients and
    optimizer state, ``layers`` one by one), or a DDP replica to train through (returned)."""
    if dist.world == 1:
        return None
    if sharded:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(dist.device.type, (dist.world,))
        for layer in layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return None
    return torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=find_unused_parameters)


def init_distributed(cfg: TrainConfig) -> Distributed:
    """torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; without them this is one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    if world > 1:
        backend = cfg.distributed_training.distributed_backend if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if not torch.distributed.is_initialized():
            # torchrun keeps its store across restarts (--max-restarts): without a prefix per
            # attempt, a restarted process could read a dead peer's address and never connect
            store, rank, size = next(torch.distributed.rendezvous("env://"))
            attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
            torch.distributed.init_process_group(backend=backend, store=torch.distributed.PrefixStore(
                f"hubertkit/attempt{attempt}", store), rank=rank, world_size=size)
        return Distributed(torch.distributed.get_rank(), world, device)
    configured = cfg.distributed_training.distributed_world_size
    if configured > 1:
        log.warning(
            "distributed_training.distributed_world_size=%d but this is 1 process: each update sees %dx fewer "
            "samples than the recipe; set optimization.update_freq=[%d] to match it, or launch with torchrun",
            configured, configured, configured * cfg.optimization.update_freq[0],
        )
    return Distributed(0, 1, device)
