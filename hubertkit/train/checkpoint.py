"""Training checkpoints: written atomically, pruned, and enough to resume exactly."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch

from hubertkit.errors import HubertkitError
from hubertkit.fileio import atomic_path
from hubertkit.model.io import FORMAT

log = logging.getLogger(__name__)

LAST, BEST = "checkpoint_last.pt", "checkpoint_best.pt"
_INTERVAL = re.compile(r"checkpoint_(\d+)_(\d+)\.pt$")


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` to ``path`` via a temporary file, fsync and rename: a crash or a
    full disk never leaves a truncated checkpoint behind."""
    def failed(e: Exception) -> HubertkitError:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
        kept = "the previous one is intact" if path.is_file() else "no earlier one existed"
        return HubertkitError(f"cannot write checkpoint {path}: {why} ({kept}; free space and re-run to resume)")

    with atomic_path(path) as tmp:
        try:
            torch.save({"format": FORMAT, "version": 1, **state}, tmp)
        except (OSError, RuntimeError) as e:  # torch's zip writer reports a full disk as RuntimeError
            raise failed(e) from None


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
