"""Figures of a run, drawn from its own logs (never from typed-in numbers)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hubertkit.fileio import atomic_path


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display on servers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, png: str | os.PathLike) -> Path:
    png = Path(png)
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    pyplot().close(fig)
    return png


def training_curves(log_path: str | os.PathLike, png: str | os.PathLike, title: str = "") -> Path:
    """Loss and masked/unmasked accuracy against updates, train and valid, from
    ``train_log.jsonl``."""
    plt = pyplot()

    records = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    for split, style in (("train", "-"), ("valid", "o--")):
        rows = [r for r in records if r["split"] == split]
        if not rows:
            continue
        x = [r["update"] for r in rows]
        ax_loss.plot(x, [r["loss"] for r in rows], style, label=split)
        for key, name in (("acc_m_0", "masked"), ("acc_u_0", "unmasked")):
            if key in rows[0]:
                ax_acc.plot(x, [r[key] for r in rows], style, label=f"{split} {name}")
    ax_loss.set(xlabel="update", ylabel="loss (bits per scored frame)", title="loss")
    ax_acc.set(xlabel="update", ylabel="accuracy", title="frame accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, png)
