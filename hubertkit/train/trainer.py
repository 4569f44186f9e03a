"""The training loop: fairseq's ``hydra_train.py`` for HuBERT pretraining and CTC
fine-tuning, unit ASR: the task (``tasks/``, chosen by ``model._name``) says which.

One update = ``update_freq`` batches per process; gradients are summed over what the
task scores (frames, or utterances with ``sentence_avg``) and divided by its total
(across processes), as fairseq's trainer does.
Everything a resumed run needs (weights, optimizer, grad scaler, RNG states, epoch and
position in the epoch's batch order) is in ``checkpoint_last.pt``; batch order, crops
and masks derive from ``(seed, epoch, batch)`` and ``(seed, update)``, so a resumed run
continues exactly as the uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from hubertkit.config import TrainConfig, config_dir_default, load_config
from hubertkit.data.batching import Batches, batches_by_size
from hubertkit.data.dataset import HubertDataset
from hubertkit.errors import HubertkitError
from hubertkit.fileio import FolderLock, write_text
from hubertkit.model.checkpoint import read_path
from hubertkit.model.io import starting_weights, warm_start
from hubertkit.progress import progress_bar
from hubertkit.train.checkpoint import (
    BEST,
    LAST,
    interval_name,
    prune_interval_checkpoints,
    save_checkpoint,
    writable_dir,
)
from hubertkit.train.schedule import polynomial_decay, tri_stage
from hubertkit.train.tasks import has_split, make_task
from hubertkit.train.tasks.base import Ratio, Stats

log = logging.getLogger(__name__)
COLLAPSE_SHARE = 0.05  # below this share of within-utterance variance at validation, warn


class BatchDataset(torch.utils.data.Dataset):
    """Batch ``k`` of an epoch, loaded and collated (in a DataLoader worker); its crop
    offsets come from ``(seed, epoch, k)``."""

    def __init__(self, dataset: HubertDataset, batches: Batches, seed: int, epoch: int):
        self.dataset, self.batches, self.seed, self.epoch = dataset, batches, seed, epoch

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, k])
        return self.dataset.collate([self.dataset[i] for i in self.batches[k]], rng)


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


def _precision(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if cfg.common.bf16 or (cfg.common.fp16 and device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16  # bf16 where the GPU has it: no loss-scale collapse
    if cfg.common.fp16 and device.type == "cuda":
        return torch.float16
    return None


def _mask_generator(seed: int, update: int, micro: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + update * 101 + micro)


class Trainer:
    def __init__(self, cfg: TrainConfig, progress: bool = True, trust_pickle: bool = False):
        self.cfg, self.progress, self.trust_pickle = cfg, progress, trust_pickle
        self.dist = init_distributed(cfg)
        splits = [cfg.dataset.train_subset]
        self.has_valid = not cfg.dataset.disable_validation and has_split(cfg, cfg.dataset.valid_subset)
        if self.has_valid:
            splits.append(cfg.dataset.valid_subset)
        self.task = make_task(cfg, splits, trust_pickle)
        self.train_data = self.task.datasets[0]
        self.valid_data = self.task.datasets[1] if self.has_valid else None
        torch.manual_seed(cfg.common.seed)
        self.model = self.task.build_model().to(self.dist.device)
        self.fsdp = self.dist.world > 1 and cfg.distributed_training.ddp_backend == "fully_sharded"
        self.ddp = None
        if self.fsdp:  # parameters, gradients and optimizer state sharded over the processes
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            mesh = init_device_mesh(self.dist.device.type, (self.dist.world,))
            for layer in self.task.encoder(self.model).encoder.layers:
                fully_shard(layer, mesh=mesh)
            fully_shard(self.model, mesh=mesh)
        elif self.dist.world > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model, find_unused_parameters=cfg.distributed_training.find_unused_parameters
            )
        fused = self.dist.device.type == "cuda" and not self.fsdp  # one kernel for all parameters
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.optimization.lr[0], betas=cfg.optimizer.betas,
            eps=cfg.optimizer.adam_eps, weight_decay=cfg.optimizer.weight_decay,
            fused=fused or None, foreach=None if fused else True,
        )
        self.dtype = _precision(cfg, self.dist.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)
        self.save_dir = writable_dir(cfg.checkpoint.save_dir) if self.dist.main and not cfg.checkpoint.no_save else Path(cfg.checkpoint.save_dir)
        self.lock = FolderLock(self.save_dir, "checkpoint.save_dir") if self.dist.main and not cfg.checkpoint.no_save else None
        self.num_updates, self.epoch, self.batch_in_epoch = 0, 1, 0
        self.best = math.inf
        self.nonfinite_total, self.nonfinite_run = 0, 0
        self.samples_seen = 0
        self._resume()

    # -- state ------------------------------------------------------------------------------

    def _full_states(self) -> tuple[dict, dict]:
        """Unsharded model and optimizer state (a collective call under FSDP)."""
        if not self.fsdp:
            return self.model.state_dict(), self.optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(self.model, options=options), get_optimizer_state_dict(self.model, self.optimizer, options=options)

    def _full_model_state(self) -> dict:
        """The unsharded model state on every process (under FSDP, a collective gather)."""
        if not self.fsdp:
            return self.model.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True))

    def _random_states(self) -> list[dict]:
        """Every process's random state (dropout and layerdrop draw from it), gathered so that
        each process of a resumed run continues its own stream (a collective call)."""
        mine = {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(self.dist.device) if self.dist.device.type == "cuda" else None}
        if self.dist.world == 1:
            return [mine]
        every: list = [None] * self.dist.world
        torch.distributed.all_gather_object(every, mine)
        return every

    def state(self, random_states: list[dict]) -> dict:
        """The checkpoint's contents; ``random_states``: every process's (``_random_states``)."""
        model_state, optimizer_state = self._full_states()
        model_cfg = self.task.encoder(self.model).cfg.to_dict()
        return {
            # task.normalize beside the model: how its waveforms are read (unit ASR reads no audio)
            "cfg": {"model": model_cfg, "train": self.cfg.to_dict(),
                    "task": {"normalize": getattr(self.cfg.task, "normalize", False)}},
            **self.task.checkpoint_fields(self.model),
            "model": model_state,
            "optimizer": optimizer_state,
            "scaler": self.scaler.state_dict(),
            "trainer": {
                "num_updates": self.num_updates, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "best": self.best, "nonfinite_total": self.nonfinite_total, "samples_seen": self.samples_seen,
                # dropout and layerdrop draw from torch's RNG; crops and masks are seeded per batch
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "random_states": random_states,  # one per process
            },
        }

    def _resume(self) -> None:
        """fairseq's ``load_checkpoint``: ``checkpoint_last.pt`` of ``save_dir`` if there
        (the same command resumes a preempted run), else ``finetune_from_model`` with
        every reset; a ``restore_file`` other than the default is loaded as given, with
        the ``reset_*`` flags the user set, on the first launch (a relaunch resumes from
        ``checkpoint_last.pt``, see ``_relaunched_after``)."""
        ck = self.cfg.checkpoint
        resets = {k: getattr(ck, k) for k in ("reset_optimizer", "reset_lr_scheduler", "reset_dataloader", "reset_meters")}
        if ck.finetune_from_model and any(resets.values()):
            raise HubertkitError("checkpoint.finetune_from_model resets the optimizer, schedule, data order and meters "
                                 "itself; it cannot be set with " + ", ".join(f"checkpoint.{k}" for k, v in resets.items() if v))
        if ck.restore_file != LAST:
            if ck.finetune_from_model:
                raise HubertkitError("checkpoint.finetune_from_model and a checkpoint.restore_file other than "
                                     f"{LAST} cannot be set together (as in fairseq)")
            path = Path(ck.restore_file)
            if not path.exists():  # fairseq would train from scratch, silently
                raise HubertkitError(f"checkpoint.restore_file={path} does not exist")
            relaunch = self._relaunched_after(path)
            if relaunch is None:
                return self._restore(path, **resets)
            return self._restore(self.save_dir / LAST, read=relaunch)  # an exact resume: no resets
        path = self.save_dir / LAST
        if path.is_file():
            return self._restore(path, **resets)
        if ck.finetune_from_model:
            if not Path(ck.finetune_from_model).exists():
                raise HubertkitError(f"checkpoint.finetune_from_model={ck.finetune_from_model} does not exist")
            self._restore(Path(ck.finetune_from_model), True, True, True, True)

    def _relaunched_after(self, restore: Path) -> tuple | None:
        """When this launch is a relaunch (a requeued or restarted job) of a run that
        started from ``restore`` and has saved since, ``checkpoint_last.pt`` as read
        (``read_path``), to resume from: fairseq reloads ``restore_file`` on every launch
        and overwrites the later ``checkpoint_last.pt``. None on a first launch; refused
        where ``checkpoint_last.pt`` belongs to another run."""
        last = self.save_dir / LAST
        if not last.is_file() or last.resolve() == restore.resolve():
            return None
        read = read_path(last)
        _, found = read
        state = found.state if found is not None and found.training else {}
        made_from = state.get("cfg", {}).get("train", {}).get("checkpoint", {}).get("restore_file")
        done = state.get("trainer", {}).get("num_updates", "?")
        if made_from is None or Path(made_from).resolve() != restore.resolve():
            raise HubertkitError(
                f"checkpoint.restore_file={restore}: {last} (update {done}) is another run's, and this run's first "
                f"save would overwrite it; use another checkpoint.save_dir, or move {last} away to start again "
                f"from {restore}")
        log.info("%s holds update %s of this run, started from checkpoint.restore_file=%s: resuming from it "
                 "(fairseq would reload the restore file and overwrite the later updates)", last, done, restore)
        return read

    def _restore(self, path: Path, reset_optimizer: bool = False, reset_lr_scheduler: bool = False,
                 reset_dataloader: bool = False, reset_meters: bool = False, read: tuple | None = None) -> None:
        """Load ``path`` (``read``: it as ``read_path`` gave it, when already read): the
        weights always (the encoder must match; label-set and disentangling heads of
        another shape start fresh), the rest unless reset. A checkpoint of another
        program, or one whose heads changed, has no optimizer state for this model, so it
        needs ``reset_optimizer`` and ``reset_dataloader``."""
        contents, ck = read or read_path(path)
        ours = ck is not None and ck.training and ck.kind == self.task.checkpoint_kind
        state = ck.state if ours else None
        same_run = path.resolve() == (self.save_dir / LAST).resolve()
        if same_run and not ours:
            raise HubertkitError(f"{path} is not a training checkpoint of this task ({self.task.checkpoint_kind}); "
                                 "use another checkpoint.save_dir")
        if same_run and state["cfg"]["model"] != self.task.encoder(self.model).cfg.to_dict():
            raise HubertkitError(f"{path} was trained with another model config; use another checkpoint.save_dir")
        source = state["model"] if ours else starting_weights(path, self.trust_pickle, contents)
        weights, fresh = warm_start(self._full_model_state(), source, str(path))
        if ours:
            self.task.check_start(state, fresh, path)
        if not (reset_optimizer and reset_dataloader) and (not ours or fresh):
            why = "is not a hubertkit training checkpoint" if not ours else f"has another {' and '.join(fresh)}"
            raise HubertkitError(f"{path} {why}: it holds no optimizer state or data position for this model; set "
                                 "checkpoint.reset_optimizer=true checkpoint.reset_dataloader=true (or use "
                                 "checkpoint.finetune_from_model)")
        self._set_states(weights, None if reset_optimizer else state["optimizer"])
        t = state["trainer"] if ours else {}
        if not reset_optimizer:
            self.scaler.load_state_dict(state["scaler"])
            self.num_updates = t["num_updates"]
        if not reset_dataloader:
            self.epoch, self.batch_in_epoch = t["epoch"], t["batch_in_epoch"]
        if not (reset_optimizer or reset_meters):
            self.best = t["best"]
        if not reset_meters:
            self.nonfinite_total, self.samples_seen = t.get("nonfinite_total", 0), t.get("samples_seen", 0)
        if not (reset_optimizer or reset_dataloader or reset_meters):  # an exact resume continues the random streams
            torch.set_rng_state(t["torch_rng"])
            if t["cuda_rng"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(t["cuda_rng"])
            own = t.get("random_states") or []  # each process's own stream (checkpoints since 2026-12-07)
            if len(own) == self.dist.world:
                torch.set_rng_state(own[self.dist.rank]["torch"])
                if own[self.dist.rank]["cuda"] is not None and self.dist.device.type == "cuda":
                    torch.cuda.set_rng_state(own[self.dist.rank]["cuda"], self.dist.device)
        if fresh:
            log.info("%s: the %s start fresh (the checkpoint's differ from the configured model's)", path, ", ".join(fresh))
        reset = [name for name, flag in (("optimizer", reset_optimizer), ("lr scheduler", reset_lr_scheduler),
                                         ("dataloader", reset_dataloader), ("meters", reset_meters)) if flag]
        log.info("started from %s at update %d (epoch %d)%s", path, self.num_updates, self.epoch,
                 f"; reset: {', '.join(reset)}" if reset else "")

    def _set_states(self, model_state: dict, optimizer_state: dict | None) -> None:
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
                set_optimizer_state_dict,
            )

            options = StateDictOptions(full_state_dict=True)
            set_model_state_dict(self.model, model_state, options=options)
            if optimizer_state is not None:
                set_optimizer_state_dict(self.model, self.optimizer, optimizer_state, options=options)
        else:
            self.model.load_state_dict(model_state)
            if optimizer_state is not None:
                self.optimizer.load_state_dict(optimizer_state)

    def save(self, valid_loss: float | None = None) -> None:
        if self.cfg.checkpoint.no_save:
            return
        random_states = self._random_states()  # every process's, gathered
        state = self.state(random_states) if (self.dist.main or self.fsdp) else None  # FSDP gathers on every process
        if not self.dist.main:
            return
        ck = self.cfg.checkpoint
        is_best = valid_loss is not None and valid_loss < self.best
        if is_best:
            state["trainer"]["best"] = valid_loss
        # the resume point first: if the disk fills up later, the run still continues from here
        save_checkpoint(self.save_dir / LAST, self.task.checkpoint_kind, state)
        if is_best:
            self.best = valid_loss
            save_checkpoint(self.save_dir / BEST, self.task.checkpoint_kind, state)
        if ck.save_interval_updates and self.num_updates % ck.save_interval_updates == 0:
            save_checkpoint(self.save_dir / interval_name(self.epoch, self.num_updates), self.task.checkpoint_kind, state)
            prune_interval_checkpoints(self.save_dir, ck.keep_interval_updates)

    def _best_metric(self, valid: dict | None) -> float | None:
        """checkpoint.best_checkpoint_metric of a validation, as a number to minimise."""
        if not valid:
            return None
        name = self.cfg.checkpoint.best_checkpoint_metric
        if name not in valid:
            raise HubertkitError(f"checkpoint.best_checkpoint_metric={name!r} is not among the validation's: {sorted(valid)}")
        return -valid[name] if self.cfg.checkpoint.maximize_best_checkpoint_metric else valid[name]

    # -- one update -------------------------------------------------------------------------

    def _lr(self) -> float:
        c, s = self.cfg, self.cfg.lr_scheduler
        if s._name == "tri_stage":
            steps = [s.warmup_steps, s.hold_steps, s.decay_steps]
            if s.phase_ratio:  # fractions of max_update, as fairseq
                steps = [int(r * c.optimization.max_update) for r in s.phase_ratio]
            return tri_stage(self.num_updates, c.optimization.lr[0], *steps, s.init_lr_scale, s.final_lr_scale)
        return polynomial_decay(self.num_updates, c.optimization.lr[0], s.warmup_updates, int(s.total_num_update),
                                s.end_learning_rate, s.power)

    def _forward(self, batch: dict, generator: torch.Generator, train: bool) -> tuple[torch.Tensor, int, dict]:
        dev = self.dist.device
        net = self.ddp if (self.ddp is not None and train) else self.model
        with torch.autocast(dev.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            return self.task.loss(net, to_device(batch, dev), dev, generator, train, self.num_updates)

    def train_step(self, batches: list[dict]) -> dict:
        self.model.train()
        lr = self._lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        stats: dict = {}
        for micro, batch in enumerate(batches):
            last = micro == len(batches) - 1
            sync = self.ddp.no_sync() if (self.ddp is not None and not last) else contextlib.nullcontext()
            if self.fsdp:
                self.model.set_requires_gradient_sync(last)
            with sync:
                slot = self.dist.rank * len(batches) + micro  # the batch's place among all processes' batches
                loss, n, log_out = self._forward(batch, _mask_generator(self.cfg.common.seed, self.num_updates, slot), True)
                self.scaler.scale(loss).backward()
            add_stats(stats, {**log_out, "samples": batch["samples"]})
        stats = self._all_sum(stats)
        sample_size = stats["sample_size"]
        self.scaler.unscale_(self.optimizer)
        scale = self.dist.world / max(sample_size, 1.0)
        for p in self.model.parameters():
            if p.grad is not None:
                p.grad.mul_(scale)
        clip = self.cfg.optimization.clip_norm
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip > 0 else float("inf"))
        if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP
            grad_norm = grad_norm.full_tensor()
        finite = math.isfinite(stats["loss"]) and torch.isfinite(grad_norm).item()
        if finite:
            self.scaler.step(self.optimizer)
            self.nonfinite_run = 0
        else:
            self.nonfinite_total += 1
            self.nonfinite_run += 1
            log.warning("update %d: non-finite loss or gradient, skipped (%d in a row)", self.num_updates + 1, self.nonfinite_run)
            if self.nonfinite_run >= self.cfg.checkpoint.max_nonfinite_updates:
                last = self.save_dir / LAST
                resume = (f"a re-run resumes from {last}" if last.is_file() and not self.cfg.checkpoint.no_save
                          else "no checkpoint was saved yet, so a re-run starts from update 0")
                raise HubertkitError(
                    f"{self.nonfinite_run} updates in a row had a non-finite loss or gradient "
                    f"(checkpoint.max_nonfinite_updates={self.cfg.checkpoint.max_nonfinite_updates}); stopping. "
                    f"{resume[0].upper() + resume[1:]}. Lower optimization.lr, or use bf16 instead of fp16"
                )
        self.scaler.update()
        self.samples_seen += int(stats["samples"])
        if finite:  # a skipped update is no update: the schedule and masks do not advance
            self.num_updates += 1
        out = {**stats, "lr": lr, "grad_norm": float(grad_norm), "skipped": not finite}
        if self.scaler.is_enabled():
            out["loss_scale"] = self.scaler.get_scale()
        return out

    @torch.no_grad()
    def validate(self) -> dict:
        self.model.eval()
        data = self.valid_data
        batches = batches_by_size(data.num_tokens, self.cfg.dataset.max_tokens,
                                  self.cfg.dataset.batch_size, shuffle=False)
        if not self.fsdp:  # under FSDP every forward is collective: each process runs them all
            batches = batches[self.dist.rank :: self.dist.world]
        stats: dict = {}
        for k, b in enumerate(batches):
            batch = data.collate([data[i] for i in b], np.random.default_rng([self.cfg.common.seed, 0, k]))
            _, _, out = self._forward(batch, _mask_generator(self.cfg.common.seed, 0, k), False)
            add_stats(stats, out)
        return summarize(stats if self.fsdp else self._all_sum(self._same_keys(stats)))

    def _same_keys(self, stats: Stats) -> Stats:
        """``stats`` with every key any process has (zero where this one has none): a process
        whose share of the valid batches is empty must still enter the same collective."""
        if self.dist.world == 1:
            return stats
        schemas: list = [None] * self.dist.world
        torch.distributed.all_gather_object(schemas, {k: isinstance(v, Ratio) for k, v in stats.items()})
        union = {k: ratio for schema in schemas for k, ratio in schema.items()}
        return {k: stats.get(k, Ratio(0.0, 0.0) if ratio else 0.0) for k, ratio in union.items()}

    def _all_sum(self, stats: Stats) -> Stats:
        """Statistics summed over processes (the same keys on every one, summed in sorted order)."""
        keys = sorted(stats)
        flat = [x for k in keys for x in ((stats[k].total, stats[k].count) if isinstance(stats[k], Ratio) else (stats[k],))]
        summed = iter(self.dist.all_sum([float(x) for x in flat]))
        return {k: Ratio(next(summed), next(summed)) if isinstance(stats[k], Ratio) else next(summed) for k in keys}

    def check_replicas(self) -> None:
        """Every process must hold the same weights after training (DDP's contract)."""
        if self.dist.world == 1 or self.fsdp:  # FSDP holds shards, not replicas
            return
        digest = torch.stack([torch.stack([p.double().sum(), p.double().pow(2).sum()]) for p in self.model.parameters()]).flatten()
        gathered = [torch.empty_like(digest) for _ in range(self.dist.world)]
        torch.distributed.all_gather(gathered, digest.to(self.dist.device))
        if not all(torch.equal(gathered[0], g) for g in gathered[1:]):
            raise HubertkitError("model replicas differ between processes after training")
        if self.dist.main:
            log.info("model replicas identical on all %d processes", self.dist.world)

    # -- the loop ---------------------------------------------------------------------------

    def epoch_batches(self, epoch: int) -> tuple[Batches, np.ndarray]:
        """The epoch's batches (the same on every process) and which of them this process
        takes: every ``world``-th, so update ``u`` on ``world`` processes sees the batches
        one process with ``update_freq × world`` would."""
        d = self.train_data
        batches = batches_by_size(d.num_tokens, self.cfg.dataset.max_tokens,
                                  self.cfg.dataset.batch_size, seed=self.cfg.common.seed, epoch=epoch)
        freq, world = self.cfg.optimization.update_freq[0], self.dist.world
        per_update = freq * world
        if len(batches) < per_update:
            raise HubertkitError(f"{len(batches)} batches cannot feed {world} process(es) x update_freq {freq}; lower dataset.max_tokens")
        usable = len(batches) // per_update * per_update
        mine = np.arange(0, usable, per_update)[:, None] + self.dist.rank * freq + np.arange(freq)
        return batches, mine.ravel()

    def _show(self, out: dict, window: Stats, bar, logger: MetricsLogger, start: float) -> Stats:
        """One update on the progress bar, and every ``log_interval`` updates the window's mean
        in the log; returns the window to add to next."""
        cfg = self.cfg
        add_stats(window, {**out, "updates": 1})
        summary = summarize(out)
        shown = {"acc_m": f"{summary['acc_m_0']:.3f}"} if "acc_m_0" in summary else {}  # pretraining
        bar.set_postfix(loss=f"{summary['loss']:.3f}", **shown, lr=f"{out['lr']:.2e}",
                        h=f"{self.samples_seen / cfg.task.sample_rate / 3600:.2f}",
                        refresh=False)  # update() redraws, at most every mininterval
        bar.update(1)
        if self.num_updates % cfg.common.log_interval:
            return window
        logger.log("train", self.num_updates, {**summarize(window), "lr": out["lr"], "epoch": self.epoch,
                   **({"loss_scale": out["loss_scale"]} if "loss_scale" in out else {}),
                   "audio_hours": self.samples_seen / cfg.task.sample_rate / 3600,
                   "nonfinite_updates": self.nonfinite_total, "wall_s": time.time() - start})
        return {}

    def _due(self, end_of_epoch: bool, stepped: bool) -> tuple[bool, bool]:
        """Whether to save and to validate now, as fairseq's ``validate_and_save``: saves every
        ``checkpoint.save_interval`` epochs and ``save_interval_updates`` updates; validation
        every ``dataset.validate_interval`` epochs and ``validate_interval_updates`` updates,
        at every mid-epoch save (so checkpoint_best is chosen among all saved updates), none
        before ``validate_after_updates``; both at the last update (``max_update``, or the end
        of ``max_epoch``). An interval of 0 never fires. ``stepped`` is false for a skipped
        (non-finite) update, whose update number has been seen already."""
        cfg, u = self.cfg, self.num_updates
        max_epoch = cfg.optimization.max_epoch
        last = u >= cfg.optimization.update_limit or (end_of_epoch and bool(max_epoch) and self.epoch >= max_epoch)

        def every(updates: int) -> bool:
            return stepped and bool(updates) and u % updates == 0

        def epoch_end(epochs: int) -> bool:
            return end_of_epoch and bool(epochs) and self.epoch % epochs == 0

        save = last or epoch_end(cfg.checkpoint.save_interval) or every(cfg.checkpoint.save_interval_updates)
        validate = self.has_valid and (last or (u >= int(cfg.dataset.validate_after_updates) and (
            (save and not end_of_epoch) or epoch_end(cfg.dataset.validate_interval)
            or every(cfg.dataset.validate_interval_updates))))
        return save, validate

    def run(self) -> dict:
        cfg = self.cfg
        max_update, freq = cfg.optimization.update_limit, cfg.optimization.update_freq[0]
        logger = MetricsLogger(self.save_dir, cfg, enabled=self.dist.main, resumed_at=self.num_updates)
        bar = progress_bar(total=cfg.optimization.max_update or None, initial=self.num_updates, unit="upd", desc="train",
                   disable=not (self.progress and self.dist.main), dynamic_ncols=True)
        start, window = time.time(), {}
        try:
            while self.num_updates < max_update and (not cfg.optimization.max_epoch or self.epoch <= cfg.optimization.max_epoch):
                batches, mine = self.epoch_batches(self.epoch)
                loader = torch.utils.data.DataLoader(
                    torch.utils.data.Subset(BatchDataset(self.train_data, batches, cfg.common.seed, self.epoch),
                                            mine[self.batch_in_epoch :]),
                    batch_size=None, num_workers=cfg.dataset.num_workers,
                    pin_memory=self.dist.device.type == "cuda",  # then the tasks' copies need not wait
                    persistent_workers=False, prefetch_factor=4 if cfg.dataset.num_workers else None,
                    # its own generator: drawing worker seeds from torch's global RNG would
                    # shift the dropout stream of a resumed run
                    generator=torch.Generator().manual_seed(cfg.common.seed + self.epoch),
                )
                pending = []
                for batch in loader:
                    pending.append(batch)
                    self.batch_in_epoch += 1
                    if len(pending) < freq:
                        continue
                    out = self.train_step(pending)
                    pending = []
                    end_of_epoch = self.batch_in_epoch == len(mine)
                    if not out["skipped"]:
                        window = self._show(out, window, bar, logger, start)
                    elif not end_of_epoch:
                        continue
                    save_now, validate_now = self._due(end_of_epoch, stepped=not out["skipped"])
                    valid = self.validate() if validate_now else None
                    if valid:
                        logger.log("valid", self.num_updates, valid)
                        if valid.get("mean_within_var", 1.0) < COLLAPSE_SHARE:
                            log.warning("update %d: only %.1f%% of the top layer's variance is within utterances: the "
                                        "representation is collapsing (lower optimization.lr or lengthen the warm-up)",
                                        self.num_updates, 100 * valid["mean_within_var"])
                    if save_now:
                        self.save(self._best_metric(valid))
                    if self.num_updates >= max_update:
                        break
                if self.num_updates < max_update:
                    self.epoch += 1
                    self.batch_in_epoch = 0
        finally:
            bar.close()
            logger.close()
            if self.lock:
                self.lock.release()
        self.check_replicas()
        return {"num_updates": self.num_updates, "epoch": self.epoch, "save_dir": str(self.save_dir),
                "nonfinite_updates": self.nonfinite_total, "seconds": time.time() - start}


def to_device(batch: dict, device: torch.device) -> dict:
    """The batch's tensors (and lists of them) on ``device``, copied without waiting (the
    loader pins them on CUDA); on the CPU the batch as it is."""
    if device.type == "cpu":
        return batch

    def move(v):
        if torch.is_tensor(v):
            return v.to(device, non_blocking=True)
        return [move(x) for x in v] if isinstance(v, list) and v and torch.is_tensor(v[0]) else v

    return {k: move(v) for k, v in batch.items()}


def add_stats(into: Stats, stats: Stats) -> None:
    for k, v in stats.items():
        into[k] = into[k] + v if k in into else v


def summarize(stats: Stats) -> dict:
    """fairseq's reported values: loss per scored frame in bits, and every ratio's value."""
    n = max(stats.get("sample_size", 0), 1)
    out = {"loss": stats.get("loss", 0.0) / n / math.log(2), "sample_size": stats.get("sample_size", 0)}
    out.update({k: v.value for k, v in stats.items() if isinstance(v, Ratio)})
    return out


def _drop_records_after(path: Path, update: int) -> None:
    """A run killed after its last checkpoint logged updates that the resumed run will
    log again: keep the log a single history, up to the resume point."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            if json.loads(line).get("update", 0) > update:
                continue
        except (json.JSONDecodeError, AttributeError):  # a line cut by the kill
            continue
        kept.append(line)
    if len(kept) != len(lines):
        write_text(path, "".join(kept))


class MetricsLogger:
    """``train_log.jsonl`` in the save dir (always), TensorBoard and W&B when configured."""

    def __init__(self, save_dir: Path, cfg: TrainConfig, enabled: bool, resumed_at: int = 0):
        self.enabled = enabled and not cfg.checkpoint.no_save
        if self.enabled:
            _drop_records_after(save_dir / "train_log.jsonl", resumed_at)
        self.file = open(save_dir / "train_log.jsonl", "a") if self.enabled else None
        self.json = cfg.common.log_format == "json"
        self.tb = self.wandb = None
        if not self.enabled:
            return
        # Logging never stops a run: a missing logger is a warning that says how to silence it.
        if cfg.common.tensorboard_logdir:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.warning("common.tensorboard_logdir=%s is set but tensorboard is not installed; logging to "
                            "train_log.jsonl only (pip install tensorboard, or common.tensorboard_logdir=null)",
                            cfg.common.tensorboard_logdir)
            else:
                self.tb = SummaryWriter(str(Path(save_dir) / cfg.common.tensorboard_logdir))
        if cfg.common.wandb_project:
            try:
                import wandb
            except ImportError:
                log.warning("common.wandb_project=%s is set but wandb is not installed; logging to train_log.jsonl only "
                            "(pip install wandb, or common.wandb_project=null)", cfg.common.wandb_project)
            else:
                self.wandb = wandb.init(project=cfg.common.wandb_project, config=cfg.to_dict(), dir=str(save_dir))

    def log(self, split: str, update: int, values: dict) -> None:
        if not self.enabled:
            return
        record = {"split": split, "update": update, **{k: v for k, v in values.items() if isinstance(v, (int, float))}}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.json:
            tqdm.write(json.dumps(record))
        if self.tb:
            for k, v in record.items():
                if k not in ("split", "update"):
                    self.tb.add_scalar(f"{split}/{k}", v, update)
        if self.wandb:
            self.wandb.log({f"{split}/{k}": v for k, v in record.items() if k != "split"}, step=update)

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.tb:
            self.tb.close()
        if self.wandb:
            self.wandb.finish()


def train(config_name: str, overrides: list[str] = (), config_dir: str | None = None, progress: bool = True,
          trust_pickle: bool = False) -> dict:
    """``hubertkit train [--config-dir D] --config-name NAME key=value ...``."""
    cfg = load_config(config_name, overrides, config_dir)
    try:
        result = Trainer(cfg, progress, trust_pickle).run()
        if torch.distributed.is_initialized():
            torch.distributed.barrier()
        return result
    finally:
        if torch.distributed.is_initialized():  # a live gloo group can abort the process at exit
            torch.distributed.destroy_process_group()


def check_training(cfg: TrainConfig, trust_pickle: bool = False) -> None:
    """Set the run up once, as its first launch will, and stop there: the data, labels,
    dictionaries, the checkpoint it starts or resumes from and ``save_dir`` are checked
    (and refused) where this is called, e.g. before a job waits in a cluster's queue."""
    trainer = Trainer(cfg, progress=False, trust_pickle=trust_pickle)
    if trainer.lock:
        trainer.lock.release()


def finetune(config_name: str, overrides: list[str] = (), config_dir: str | None = None, progress: bool = True,
             trust_pickle: bool = False) -> dict:
    """``hubertkit finetune --config-name base_10h ...``: ``train`` with fairseq's
    ``config/finetune`` directory (here ``configs/finetune``) as the default;
    ``trust_pickle`` lets ``model.w2v_path`` be a fairseq checkpoint that pickles its config."""
    return train(config_name, overrides, config_dir or str(config_dir_default() / "finetune"), progress, trust_pickle)
