"""What a run reports: statistics summed over micro-batches, processes and log intervals
(a number as its sum, a ``Ratio`` as its mean), and where they go: ``train_log.jsonl``
in the save dir, TensorBoard and W&B when configured."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
from tqdm import tqdm

from hubertkit.config import TrainConfig
from hubertkit.fileio import write_text
from hubertkit.train.distributed import Distributed
from hubertkit.train.tasks.base import Ratio, Stats

log = logging.getLogger(__name__)


def read_stats(logs: list[Stats]) -> list[Stats]:
    """The tasks' statistics as Python numbers. A task may leave them as tensors on the
    device; they are read here all at once, one wait for the device a step instead of
    one a statistic (and the same values: each is read exactly, as ``.item()`` would)."""
    def parts(v):
        return (v.total, v.count) if isinstance(v, Ratio) else (v,)

    leaves = [x for log in logs for v in log.values() for x in parts(v) if torch.is_tensor(x)]
    if not leaves:
        return logs
    values = torch.stack([x.detach().reshape(()).double() for x in leaves]).tolist()
    read = {id(x): int(y) if not x.is_floating_point() else y for x, y in zip(leaves, values)}

    def host(x):
        return read[id(x)] if torch.is_tensor(x) else x

    return [{k: Ratio(host(v.total), host(v.count)) if isinstance(v, Ratio) else host(v) for k, v in log.items()}
            for log in logs]


def add_stats(into: Stats, stats: Stats) -> None:
    for k, v in stats.items():
        into[k] = into[k] + v if k in into else v


def sum_over_processes(stats: Stats, dist: Distributed, uneven: bool = False) -> Stats:
    """``stats`` summed over processes, key by key in sorted order. ``uneven``: a process
    may lack keys others have (its share of the valid batches is empty); every key any
    process has is exchanged first, so that all enter the same collective."""
    if dist.world == 1:
        return stats
    if uneven:
        union = {k: ratio for schema in dist.gather({k: isinstance(v, Ratio) for k, v in stats.items()})
                 for k, ratio in schema.items()}
        stats = {k: stats.get(k, Ratio(0.0, 0.0) if ratio else 0.0) for k, ratio in union.items()}
    keys = sorted(stats)
    flat = [x for k in keys for x in ((stats[k].total, stats[k].count) if isinstance(stats[k], Ratio) else (stats[k],))]
    summed = iter(dist.all_sum([float(x) for x in flat]))
    return {k: Ratio(next(summed), next(summed)) if isinstance(stats[k], Ratio) else next(summed) for k in keys}


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
