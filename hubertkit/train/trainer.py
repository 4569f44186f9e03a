"""The training loop: fairseq's ``hydra_train.py`` for HuBERT pretraining and CTC
fine-tuning, unit ASR: the task (``tasks/``, chosen by ``model._name``) says which.

One update = ``update_freq`` batches per process; gradients are summed over what the
task scores (frames, or utterances with ``sentence_avg``) and divided by its total
(across processes), as fairseq's trainer does.
Everything a resumed run needs (weights, optimizer, grad scaler, RNG states, epoch and
position in the epoch's batch order) is in ``checkpoint_last.pt``; batch order and
crops derive from ``(seed, epoch, batch)``, masks from ``(seed, step, slot)`` (steps
counted with skipped ones), so a resumed run continues exactly as the uninterrupted one
would have.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time

import numpy as np
import torch

from hubertkit.config import TrainConfig, config_dir_default, load_config
from hubertkit.config.model import HubertConfig
from hubertkit.data.batching import Batches, batches_by_size
from hubertkit.data.dataset import HubertDataset
from hubertkit.errors import HubertkitError
from hubertkit.model.hubert import HubertModel
from hubertkit.model.masking import batch_masks
from hubertkit.progress import progress_bar
from hubertkit.train.checkpoint import Checkpointer
from hubertkit.train.distributed import init_distributed, shard_or_replicate
from hubertkit.train.metrics import MetricsLogger, add_stats, read_stats, sum_over_processes, summarize
from hubertkit.train.schedule import learning_rate
from hubertkit.train.tasks import has_split, make_task
from hubertkit.train.tasks.base import Stats

log = logging.getLogger(__name__)


class BatchDataset(torch.utils.data.Dataset):
    """Batch ``k`` of an epoch, loaded and collated (in a DataLoader worker); its crop
    offsets come from ``(seed, epoch, k)``. With ``masks`` (a model config), the worker
    also draws the batch's masks, with the seed of the step that takes it: step
    ``first_step + k // per_step`` (``first_step``: the epoch's first), slot ``k % per_step``."""

    def __init__(self, dataset: HubertDataset, batches: Batches, seed: int, epoch: int,
                 masks: HubertConfig | None = None, first_step: int = 0, per_step: int = 1):
        self.dataset, self.batches, self.seed, self.epoch = dataset, batches, seed, epoch
        self.masks, self.first_step, self.per_step = masks, first_step, per_step

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, k])
        batch = self.dataset.collate([self.dataset[i] for i in self.batches[k]], rng)
        if self.masks is not None:
            step, slot = divmod(int(k), self.per_step)
            generator = _mask_generator(self.seed, self.first_step + step, slot)
            label_frames = min(t.shape[1] for t in batch["target_list"])
            batch["mask_indices"], batch["channel_mask"] = batch_masks(self.masks, batch["source"], batch["padding_mask"],
                                                                       label_frames, generator)
        return batch


def _precision(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if cfg.common.bf16 or (cfg.common.fp16 and device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16  # bf16 where the GPU has it: no loss-scale collapse
    if cfg.common.fp16 and device.type == "cuda":
        return torch.float16
    return None


def _optimizer(cfg: TrainConfig, model: torch.nn.Module, device: torch.device, sharded: bool) -> torch.optim.AdamW:
    fused = device.type == "cuda" and not sharded  # one kernel for all parameters
    return torch.optim.AdamW(model.parameters(), lr=cfg.optimization.lr[0], betas=cfg.optimizer.betas,
                             eps=cfg.optimizer.adam_eps, weight_decay=cfg.optimizer.weight_decay,
                             fused=fused or None, foreach=None if fused else True)


def _mask_generator(seed: int, step: int, slot: int) -> torch.Generator:
    """The masks' random stream of batch ``slot`` (``rank · update_freq + micro``) of
    ``step``: steps are counted with the skipped ones, so no two batches share masks."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + step * 101 + slot)


class Trainer:
    """Updates, validation, logging and the loop; the task says what is trained and how it
    is scored, the :class:`Checkpointer` where the run starts and what it saves."""

    def __init__(self, cfg: TrainConfig, progress: bool = True, trust_pickle: bool = False):
        self.cfg, self.progress = cfg, progress
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
        if cfg.common.compile:
            encoder = self.task.encoder(self.model)
            if not isinstance(encoder, HubertModel):
                raise HubertkitError(f"common.compile={cfg.common.compile} compiles a HuBERT encoder; "
                                     f"model._name={cfg.model._name} has none")
            encoder.compile_parts(cfg.common.compile)
        self.fsdp = self.dist.world > 1 and cfg.distributed_training.ddp_backend == "fully_sharded"
        layers = self.task.encoder(self.model).encoder.layers if self.fsdp else []  # FSDP's units
        self.ddp = shard_or_replicate(self.model, layers, self.dist, self.fsdp, cfg.distributed_training.find_unused_parameters)
        self.optimizer = _optimizer(cfg, self.model, self.dist.device, self.fsdp)
        self.dtype = _precision(cfg, self.dist.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)
        self.checkpoints = Checkpointer(cfg, self.task, self.dist, self.model, self.optimizer, self.scaler, self.fsdp,
                                        trust_pickle)
        self.nonfinite_run = 0
        self.at = self.checkpoints.load()

    def close(self) -> None:
        """Let another run use ``save_dir`` (``run`` does this when it ends)."""
        self.checkpoints.release()

    def _best_metric(self, valid: dict | None) -> float | None:
        """checkpoint.best_checkpoint_metric of a validation, as a number to minimise."""
        if not valid:
            return None
        name = self.cfg.checkpoint.best_checkpoint_metric
        if name not in valid:
            raise HubertkitError(f"checkpoint.best_checkpoint_metric={name!r} is not among the validation's: {sorted(valid)}")
        return -valid[name] if self.cfg.checkpoint.maximize_best_checkpoint_metric else valid[name]

    # -- one update -------------------------------------------------------------------------

    def _forward(self, batch: dict, generator: torch.Generator, train: bool) -> tuple[torch.Tensor, int, dict]:
        dev = self.dist.device
        net = self.ddp if (self.ddp is not None and train) else self.model
        with torch.autocast(dev.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            return self.task.loss(net, to_device(batch, dev), generator, train, self.at.num_updates)

    def train_step(self, batches: list[dict]) -> dict:
        self.model.train()
        lr = learning_rate(self.cfg, self.at.num_updates)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        logs = []
        for micro, batch in enumerate(batches):
            last = micro == len(batches) - 1
            sync = self.ddp.no_sync() if (self.ddp is not None and not last) else contextlib.nullcontext()
            if self.fsdp:
                self.model.set_requires_gradient_sync(last)
            with sync:
                slot = self.dist.rank * len(batches) + micro  # the batch's place among all processes' batches
                generator = _mask_generator(self.cfg.common.seed, self.at.steps, slot)  # unless the loader drew them
                loss, n, log_out = self._forward(batch, generator, True)
                self.scaler.scale(loss).backward()
            logs.append({**log_out, "samples": batch["samples"]})
        stats: Stats = {}
        for log_out in read_stats(logs):  # the step's one wait for its statistics
            add_stats(stats, log_out)
        stats = sum_over_processes(stats, self.dist)
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
        grad_norm = float(grad_norm)  # and one for the gradient's norm, which decides the update
        finite = math.isfinite(stats["loss"]) and math.isfinite(grad_norm)
        if finite:
            self.scaler.step(self.optimizer)
            self.nonfinite_run = 0
        else:
            self.at.nonfinite_total += 1
            self.nonfinite_run += 1
            log.warning("update %d: non-finite loss or gradient, skipped (%d in a row)", self.at.num_updates + 1, self.nonfinite_run)
            if self.nonfinite_run >= self.cfg.checkpoint.max_nonfinite_updates:
                resume = self.checkpoints.rerun_hint()
                raise HubertkitError(
                    f"{self.nonfinite_run} updates in a row had a non-finite loss or gradient "
                    f"(checkpoint.max_nonfinite_updates={self.cfg.checkpoint.max_nonfinite_updates}); stopping. "
                    f"{resume[0].upper() + resume[1:]}. Lower optimization.lr, or use bf16 instead of fp16"
                )
        self.scaler.update()
        self.at.samples_seen += int(stats["samples"])
        if finite:  # a skipped update is no update: the schedule does not advance (the step count does)
            self.at.num_updates += 1
        out = {**stats, "lr": lr, "grad_norm": grad_norm, "skipped": not finite}
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
            add_stats(stats, read_stats([out])[0])
        return summarize(stats if self.fsdp else sum_over_processes(stats, self.dist, uneven=True))

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
        bar.set_postfix(loss=f"{summary['loss']:.3f}", **self.task.progress_fields(summary), lr=f"{out['lr']:.2e}",
                        h=f"{self.at.samples_seen / cfg.task.sample_rate / 3600:.2f}",
                        refresh=False)  # update() redraws, at most every mininterval
        bar.update(1)
        if self.at.num_updates % cfg.common.log_interval:
            return window
        logger.log("train", self.at.num_updates, {**summarize(window), "lr": out["lr"], "epoch": self.at.epoch,
                   **({"loss_scale": out["loss_scale"]} if "loss_scale" in out else {}),
                   "audio_hours": self.at.samples_seen / cfg.task.sample_rate / 3600,
                   "nonfinite_updates": self.at.nonfinite_total, "wall_s": time.time() - start})
        return {}

    def _due(self, end_of_epoch: bool, stepped: bool) -> tuple[bool, bool]:
        """Whether to save and to validate now, as fairseq's ``validate_and_save``: saves every
        ``checkpoint.save_interval`` epochs and ``save_interval_updates`` updates; validation
        every ``dataset.validate_interval`` epochs and ``validate_interval_updates`` updates,
        at every mid-epoch save (so checkpoint_best is chosen among all saved updates), none
        before ``validate_after_updates``; both at the last update (``max_update``, or the end
        of ``max_epoch``). An interval of 0 never fires. ``stepped`` is false for a skipped
        (non-finite) update, whose update number has been seen already."""
        cfg, u, epoch = self.cfg, self.at.num_updates, self.at.epoch
        max_epoch = cfg.optimization.max_epoch
        last = u >= cfg.optimization.update_limit or (end_of_epoch and bool(max_epoch) and epoch >= max_epoch)

        def every(updates: int) -> bool:
            return stepped and bool(updates) and u % updates == 0

        def epoch_end(epochs: int) -> bool:
            return end_of_epoch and bool(epochs) and epoch % epochs == 0

        save = last or epoch_end(cfg.checkpoint.save_interval) or every(cfg.checkpoint.save_interval_updates)
        validate = self.has_valid and (last or (u >= int(cfg.dataset.validate_after_updates) and (
            (save and not end_of_epoch) or epoch_end(cfg.dataset.validate_interval)
            or every(cfg.dataset.validate_interval_updates))))
        return save, validate

    def _loader(self, batches: Batches, mine: np.ndarray) -> torch.utils.data.DataLoader:
        """The rest of this process's batches of the epoch, from its position in it."""
        cfg, epoch, freq = self.cfg, self.at.epoch, self.cfg.optimization.update_freq[0]
        first_step = self.at.steps - self.at.batch_in_epoch // freq  # the step of the epoch's first batch
        data = BatchDataset(self.train_data, batches, cfg.common.seed, epoch, self.task.loader_masks(self.model),
                            first_step, freq * self.dist.world)
        return torch.utils.data.DataLoader(
            torch.utils.data.Subset(data, mine[self.at.batch_in_epoch :]),
            batch_size=None, num_workers=cfg.dataset.num_workers,
            pin_memory=self.dist.device.type == "cuda",  # then the copies to the GPU need not wait
            persistent_workers=False, prefetch_factor=4 if cfg.dataset.num_workers else None,
            # its own generator: drawing worker seeds from torch's global RNG would shift the
            # dropout stream of a resumed run
            generator=torch.Generator().manual_seed(cfg.common.seed + epoch),
        )

    def run(self) -> dict:
        cfg, at = self.cfg, self.at
        max_update, freq = cfg.optimization.update_limit, cfg.optimization.update_freq[0]
        logger = MetricsLogger(self.checkpoints.save_dir, cfg, enabled=self.dist.main, resumed_at=at.num_updates)
        bar = progress_bar(total=cfg.optimization.max_update or None, initial=at.num_updates, unit="upd", desc="train",
                           disable=not (self.progress and self.dist.main), dynamic_ncols=True)
        start, window = time.time(), {}
        try:
            while at.num_updates < max_update and (not cfg.optimization.max_epoch or at.epoch <= cfg.optimization.max_epoch):
                batches, mine = self.epoch_batches(at.epoch)
                pending = []
                for batch in self._loader(batches, mine):
                    pending.append(batch)
                    at.batch_in_epoch += 1
                    if len(pending) < freq:
                        continue
                    out = self.train_step(pending)
                    pending = []
                    end_of_epoch = at.batch_in_epoch == len(mine)
                    if not out["skipped"]:
                        window = self._show(out, window, bar, logger, start)
                    elif not end_of_epoch:
                        continue
                    save_now, validate_now = self._due(end_of_epoch, stepped=not out["skipped"])
                    valid = self.validate() if validate_now else None
                    if valid:
                        logger.log("valid", at.num_updates, valid)
                        self.task.after_validation(valid, at.num_updates)
                    if save_now:
                        self.checkpoints.save(at, self._best_metric(valid))
                    if at.num_updates >= max_update:
                        break
                if at.num_updates < max_update:
                    at.epoch += 1
                    at.batch_in_epoch = 0
        finally:
            bar.close()
            logger.close()
            self.close()
        if not self.fsdp:  # FSDP holds shards, not replicas
            self.dist.check_replicas(self.model)
        return {"num_updates": at.num_updates, "epoch": at.epoch, "save_dir": str(self.checkpoints.save_dir),
                "nonfinite_updates": at.nonfinite_total, "seconds": time.time() - start}


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
    Trainer(cfg, progress=False, trust_pickle=trust_pickle).close()


def finetune(config_name: str, overrides: list[str] = (), config_dir: str | None = None, progress: bool = True,
             trust_pickle: bool = False) -> dict:
    """``hubertkit finetune --config-name base_10h ...``: ``train`` with fairseq's
    ``config/finetune`` directory (here ``configs/finetune``) as the default;
    ``trust_pickle`` lets ``model.w2v_path`` be a fairseq checkpoint that pickles its config."""
    return train(config_name, overrides, config_dir or str(config_dir_default() / "finetune"), progress, trust_pickle)
