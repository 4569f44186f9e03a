"""Training checkpoints: written atomically, pruned, and enough to resume exactly."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from hubertkit.errors import HubertkitError
from hubertkit.model.checkpoint import write_checkpoint

log = logging.getLogger(__name__)

LAST, BEST = "checkpoint_last.pt", "checkpoint_best.pt"
_INTERVAL = re.compile(r"checkpoint_(\d+)_(\d+)\.pt$")


def save_checkpoint(path: Path, kind: str, state: dict) -> None:
    """``write_checkpoint``; when the disk is full, the refusal says where a re-run resumes."""
    try:
        write_checkpoint(path, kind, state)
    except HubertkitError as e:
        last = path.parent / LAST
        where = f"re-run to resume from {last}" if last.is_file() else "no checkpoint was saved yet: a re-run starts from update 0"
        raise HubertkitError(f"{e}; free space, then {where}") from None


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
