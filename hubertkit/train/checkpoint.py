"""Training checkpoints: which files a run writes (``checkpoint_last``, ``_best``,
``_{epoch}_{updates}``), written atomically and pruned, holding enough to resume
exactly; and where a launch starts from (:class:`Checkpointer`)."""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from hubertkit.config import TrainConfig
from hubertkit.errors import HubertkitError
from hubertkit.fileio import FolderLock
from hubertkit.model.checkpoint import Loaded, read_path, write_checkpoint
from hubertkit.model.io import starting_weights, warm_start
from hubertkit.train.distributed import Distributed

log = logging.getLogger(__name__)

LAST, BEST = "checkpoint_last.pt", "checkpoint_best.pt"
_INTERVAL = re.compile(r"checkpoint_(\d+)_(\d+)\.pt$")


def save_checkpoint(path: Path, kind: str, state: dict) -> None:
    """``write_checkpoint``; when the disk is full, the refusal says where a re-run resumes."""
    try:
        write_checkpoint(path, kind, state)
    except HubertkitError as e:
        raise HubertkitError(f"{e}; free space: {rerun_hint(path.parent)}") from None


def interval_name(epoch: int, updates: int) -> str:
    return f"checkpoint_{epoch}_{updates}.pt"


def prune_interval_checkpoints(save_dir: Path, keep: int) -> None:
    """Keep the ``keep`` newest ``checkpoint_{epoch}_{updates}.pt`` (fairseq's keep_interval_updates)."""
    if keep < 0:
        return
    found = sorted(
        (int(m.group(2)), p) for p in save_dir.glob("checkpoint_*_*.pt") if (m := _INTERVAL.search(p.name))
    )
    for _, p in found[: max(0, len(found) - keep)]:
        try:
            p.unlink()
        except OSError as e:
            log.warning("could not remove old checkpoint %s: %s", p, e)


def writable_dir(save_dir: str | os.PathLike) -> Path:
    """Create ``save_dir`` and check that files can be written there, before training."""
    path = Path(save_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise HubertkitError(f"checkpoint.save_dir {path} is not writable: {e.strerror or e}") from None
    return path


@dataclass
class Position:
    """Where a run is, beside its weights and optimizer: what a resumed run continues from."""

    num_updates: int = 0
    epoch: int = 1
    batch_in_epoch: int = 0
    best: float = math.inf  # the best validation value of checkpoint.best_checkpoint_metric, minimised
    nonfinite_total: int = 0
    samples_seen: int = 0

    @property
    def steps(self) -> int:
        """Steps taken, each an update or a skipped one: what the masks are drawn for."""
        return self.num_updates + self.nonfinite_total


def rerun_hint(save_dir: Path, saved: bool = True) -> str:
    """What a re-run of the same command does, given what ``save_dir`` holds."""
    last = save_dir / LAST
    if saved and last.is_file():
        return f"a re-run resumes from {last}"
    return "no checkpoint was saved yet, so a re-run starts from update 0"


class Checkpointer:
    """A run's checkpoints: fairseq's ``load_checkpoint`` (resume ``checkpoint_last.pt``,
    else ``restore_file`` with its resets, else ``finetune_from_model``) and
    ``save_checkpoint`` (last, best, every ``save_interval_updates``, pruned), in
    hubertkit's atomic, validated format. It holds ``save_dir`` and its lock, and reads and
    writes the model, optimizer, grad scaler and random states it is given; the trainer
    keeps its :class:`Position`."""

    def __init__(self, cfg: TrainConfig, task, dist: Distributed, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler, sharded: bool, trust_pickle: bool = False):
        self.cfg, self.task, self.dist, self.trust_pickle = cfg, task, dist, trust_pickle
        self.model, self.optimizer, self.scaler, self.sharded = model, optimizer, scaler, sharded
        writes = dist.main and not cfg.checkpoint.no_save
        self.save_dir = writable_dir(cfg.checkpoint.save_dir) if writes else Path(cfg.checkpoint.save_dir)
        self.lock = FolderLock(self.save_dir, "checkpoint.save_dir") if writes else None

    def release(self) -> None:
        if self.lock:
            self.lock.release()

    def rerun_hint(self) -> str:
        return rerun_hint(self.save_dir, saved=not self.cfg.checkpoint.no_save)

    # -- loading ----------------------------------------------------------------------------

    def load(self) -> Position:
        """The position to continue from, with the weights and states set (a fresh
        :class:`Position` when nothing is loaded). A ``restore_file`` other than the default
        is loaded as given, with the ``reset_*`` flags the user set, on the first launch; a
        relaunch resumes from ``checkpoint_last.pt`` (see ``_relaunched_after``)."""
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
            return self._restore(Path(ck.finetune_from_model), True, True, True, True)
        return Position()

    def _relaunched_after(self, restore: Path) -> Loaded | None:
        """When this launch is a relaunch (a requeued or restarted job) of a run that
        started from ``restore`` and has saved since, ``checkpoint_last.pt`` as read, to
        resume from: fairseq reloads ``restore_file`` on every launch
        and overwrites the later ``checkpoint_last.pt``. None on a first launch; refused
        where ``checkpoint_last.pt`` belongs to another run."""
        last = self.save_dir / LAST
        if not last.is_file() or last.resolve() == restore.resolve():
            return None
        read = read_path(last)
        found = read.checkpoint
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
                 reset_dataloader: bool = False, reset_meters: bool = False, read: Loaded | None = None) -> Position:
        """Load ``path`` (``read``: it as ``read_path`` gave it, when already read): the
        weights always (the encoder must match; label-set and disentangling heads of
        another shape start fresh), the rest unless reset. A checkpoint of another
        program, or one whose heads changed, has no optimizer state for this model, so it
        needs ``reset_optimizer`` and ``reset_dataloader``."""
        loaded = read or read_path(path)
        ck = loaded.checkpoint
        ours = ck is not None and ck.training and ck.kind == self.task.checkpoint_kind
        state = ck.state if ours else None
        same_run = path.resolve() == (self.save_dir / LAST).resolve()
        if same_run and not ours:
            raise HubertkitError(f"{path} is not a training checkpoint of this task ({self.task.checkpoint_kind}); "
                                 "use another checkpoint.save_dir")
        ours_cfg = self.task.encoder(self.model).cfg.to_dict()  # a key the file lacks (older files) is taken as ours
        if same_run and {**ours_cfg, **state["cfg"]["model"]} != ours_cfg:
            raise HubertkitError(f"{path} was trained with another model config; use another checkpoint.save_dir")
        source = state["model"] if ours else starting_weights(loaded, self.trust_pickle)
        weights, fresh = warm_start(self._full_model_state(), source, str(path))
        if ours:
            self.task.check_start(state, fresh, path)
        if not (reset_optimizer and reset_dataloader) and (not ours or fresh):
            why = "is not a hubertkit training checkpoint" if not ours else f"has another {' and '.join(fresh)}"
            raise HubertkitError(f"{path} {why}: it holds no optimizer state or data position for this model; set "
                                 "checkpoint.reset_optimizer=true checkpoint.reset_dataloader=true (or use "
                                 "checkpoint.finetune_from_model)")
        self._set_states(weights, None if reset_optimizer else state["optimizer"])
        t, at = state["trainer"] if ours else {}, Position()
        if not reset_optimizer:
            self.scaler.load_state_dict(state["scaler"])
            at.num_updates = t["num_updates"]
        if not reset_dataloader:
            at.epoch, at.batch_in_epoch = t["epoch"], t["batch_in_epoch"]
        if not (reset_optimizer or reset_meters):
            at.best = t["best"]
        if not reset_meters:
            at.nonfinite_total, at.samples_seen = t.get("nonfinite_total", 0), t.get("samples_seen", 0)
        if not (reset_optimizer or reset_dataloader or reset_meters):  # an exact resume continues the random streams
            self._set_random_states(t)
        if fresh:
            log.info("%s: the %s start fresh (the checkpoint's differ from the configured model's)", path, ", ".join(fresh))
        reset = [name for name, flag in (("optimizer", reset_optimizer), ("lr scheduler", reset_lr_scheduler),
                                         ("dataloader", reset_dataloader), ("meters", reset_meters)) if flag]
        log.info("started from %s at update %d (epoch %d)%s", path, at.num_updates, at.epoch,
                 f"; reset: {', '.join(reset)}" if reset else "")
        return at

    def _set_random_states(self, t: dict) -> None:
        torch.set_rng_state(t["torch_rng"])
        if t["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(t["cuda_rng"])
        own = t.get("random_states") or []  # each process's own stream (checkpoints since 2026-12-07)
        if len(own) == self.dist.world:
            torch.set_rng_state(own[self.dist.rank]["torch"])
            if own[self.dist.rank]["cuda"] is not None and self.dist.device.type == "cuda":
                torch.cuda.set_rng_state(own[self.dist.rank]["cuda"], self.dist.device)

    # -- saving -----------------------------------------------------------------------------

    def save(self, at: Position, valid_loss: float | None = None) -> None:
        """``checkpoint_last.pt`` first (if the disk fills up later, the run still resumes
        from here), then ``checkpoint_best.pt`` when ``valid_loss`` beats ``at.best`` (which
        it then becomes), then the interval checkpoint when one is due. A collective call:
        every process must enter it."""
        if self.cfg.checkpoint.no_save:
            return
        random_states = self._random_states()  # every process's, gathered
        state = self.state(at, random_states) if (self.dist.main or self.sharded) else None  # FSDP gathers everywhere
        if not self.dist.main:
            return
        ck, kind = self.cfg.checkpoint, self.task.checkpoint_kind
        is_best = valid_loss is not None and valid_loss < at.best
        if is_best:
            state["trainer"]["best"] = valid_loss
        save_checkpoint(self.save_dir / LAST, kind, state)
        if is_best:
            at.best = valid_loss
            save_checkpoint(self.save_dir / BEST, kind, state)
        if ck.save_interval_updates and at.num_updates % ck.save_interval_updates == 0:
            save_checkpoint(self.save_dir / interval_name(at.epoch, at.num_updates), kind, state)
            prune_interval_checkpoints(self.save_dir, ck.keep_interval_updates)

    def state(self, at: Position, random_states: list[dict]) -> dict:
        """The checkpoint's contents; ``random_states``: every process's (``_random_states``)."""
        model_state, optimizer_state = self._full_states()
        return {
            # task.normalize beside the model: how its waveforms are read (unit ASR reads no audio)
            "cfg": {"model": self.task.encoder(self.model).cfg.to_dict(), "train": self.cfg.to_dict(),
                    "task": {"normalize": getattr(self.cfg.task, "normalize", False)}},
            **self.task.checkpoint_fields(self.model),
            "model": model_state,
            "optimizer": optimizer_state,
            "scaler": self.scaler.state_dict(),
            "trainer": {
                **asdict(at),
                # dropout and layerdrop draw from torch's RNG; crops and masks are seeded per batch
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "random_states": random_states,  # one per process
            },
        }

    def _random_states(self) -> list[dict]:
        """Every process's random state (dropout and layerdrop draw from it), gathered so that
        each process of a resumed run continues its own stream (a collective call)."""
        cuda = self.dist.device.type == "cuda"
        return self.dist.gather({"torch": torch.get_rng_state(),
                                 "cuda": torch.cuda.get_rng_state(self.dist.device) if cuda else None})

    # -- the model's and optimizer's states, whole even when sharded (FSDP) ------------------

    def _full_states(self) -> tuple[dict, dict]:
        """Unsharded model and optimizer state (a collective call under FSDP)."""
        if not self.sharded:
            return self.model.state_dict(), self.optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return (get_model_state_dict(self.model, options=options),
                get_optimizer_state_dict(self.model, self.optimizer, options=options))

    def _full_model_state(self) -> dict:
        """The unsharded model state on every process (under FSDP, a collective gather)."""
        if not self.sharded:
            return self.model.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True))

    def _set_states(self, model_state: dict, optimizer_state: dict | None) -> None:
        if not self.sharded:
            self.model.load_state_dict(model_state)
            if optimizer_state is not None:
                self.optimizer.load_state_dict(optimizer_state)
            return
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True)
        set_model_state_dict(self.model, model_state, options=options)
        if optimizer_state is not None:
            set_optimizer_state_dict(self.model, self.optimizer, optimizer_state, options=options)
