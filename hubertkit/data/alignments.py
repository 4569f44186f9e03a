"""Phone alignments: one JSON object per line with ``utt``, ``path`` and
``phones: [[phone, start_s, end_s], ...]`` (the demo corpus's ``alignments.jsonl``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from hubertkit.data.manifest import utterance_key
from hubertkit.errors import HubertkitError

# Frame i of a feature at rate R covers the 25 ms window starting at i / R: its centre
# is i / R + 12.5 ms (MFCC at 100 Hz and HuBERT's conv stack at 50 Hz alike).
FRAME_CENTER = 0.0125


def read_alignments(path: str | os.PathLike) -> dict[str, list[tuple[str, float, float]]]:
    path = Path(path)
    if not path.is_file():
        raise HubertkitError(f"alignment file {path} does not exist")
    out = {}
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key = utterance_key(record.get("path") or record["utt"])
                out[key] = [(str(p), float(s), float(e)) for p, s, e in record["phones"]]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise HubertkitError(f"{path}:{number}: expected {{'path': ..., 'phones': [[phone, start, end], ...]}}: {e}") from None
    return out


def frame_phones(phones: list[tuple[str, float, float]], num_frames: int, rate: float) -> list[str]:
    """The phone at the centre of each frame (the last phone past the end)."""
    ends = np.array([e for _, _, e in phones])
    centres = np.arange(num_frames) / rate + FRAME_CENTER
    index = np.minimum(np.searchsorted(ends, centres, side="right"), len(phones) - 1)
    return [phones[i][0] for i in index]
