"""Progress bars on stderr."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(iterable=None, **kwargs) -> tqdm:
    """``tqdm``, redrawn at most every 30 s where stderr is not a terminal (CI, SLURM
    logs), so that a log file gets a readable line now and then, not thousands."""
    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", 30.0)
    return tqdm(iterable, **kwargs)
