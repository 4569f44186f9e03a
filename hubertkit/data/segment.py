"""``hubertkit segment``: long recordings (audiobook chapters, Libri-Light's hour-long
files) as a manifest of spans cut at silences, so that no utterance needs a file of its
own (``manifest.py``'s ``path<TAB>num_samples<TAB>start``).

Where speech is: Libri-Light's voice-activity file beside each recording when there is
one (``rec.json`` with ``"voice_activity": [[start_s, end_s], ...]``), else an energy
detector on 25 ms frames every 10 ms, read block by block (never the whole file). A span
runs from the start of a voiced stretch to the end of a later one, pauses included, and
is at most ``max_seconds`` long; a voiced stretch longer than that is cut into equal
pieces. Unlike Libri-Light's ``cut_by_vad.py``, nothing is written but the manifest.

Deterministic: the same recordings give the same manifest, and the train/valid split is
one seeded draw per recording (in sorted order), so one recording's spans never fall on
both sides. Each recording's spans are kept in ``DEST/.segment/`` as they are found, so
an interrupted run goes on where it stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
from pathlib import Path

import numpy as np
import soundfile as sf

from hubertkit.data.audio import SAMPLE_RATE
from hubertkit.errors import HubertkitError
from hubertkit.data.manifest import manifest_path
from hubertkit.fileio import atomic_lines, write_text
from hubertkit.parallel import ordered_map
from hubertkit.progress import progress_bar

log = logging.getLogger(__name__)

MAX_SECONDS = 20.0  # fairseq's HuBERT crops to 250000 samples (15.6 s); a little more keeps context
MIN_SECONDS = 1.0  # shorter spans are left out (training drops those under 2 s anyway)
MIN_SILENCE = 0.3  # a pause shorter than this does not end a voiced stretch
THRESHOLD_DB = -40.0  # a frame is voiced above this energy relative to the recording's loud frames
FRAME, HOP = 400, 160  # 25 ms frames every 10 ms
BLOCK = SAMPLE_RATE * 60  # samples decoded at a time by the energy detector


def voiced_intervals(path: str | os.PathLike) -> list[tuple[int, int]]:
    """Voiced stretches of a recording, in samples: from its Libri-Light VAD file when
    present, else from the energy detector."""
    vad = Path(path).with_suffix(".json")
    if vad.is_file():
        return _libri_light_vad(vad)
    return _energy_vad(path)


def _libri_light_vad(vad: Path) -> list[tuple[int, int]]:
    try:
        spans = json.loads(vad.read_text(encoding="utf-8"))["voice_activity"]
        out = [(round(float(a) * SAMPLE_RATE), round(float(b) * SAMPLE_RATE)) for a, b in spans]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise HubertkitError(f"{vad}: expected Libri-Light's voice activity, "
                             f"{{\"voice_activity\": [[start_s, end_s], ...]}} ({e})") from None
    if any(not 0 <= a < b for a, b in out) or any(b0 > a1 for (_, b0), (a1, _) in zip(out, out[1:])):
        raise HubertkitError(f"{vad}: voice activity intervals must be increasing and not overlap")
    return out


def _energy_vad(path: str | os.PathLike) -> list[tuple[int, int]]:
    """Frames whose log energy is within ``THRESHOLD_DB`` of the recording's 95th
    percentile are voiced; pauses shorter than ``MIN_SILENCE`` are bridged."""
    energies = []
    with sf.SoundFile(str(path)) as f:
        if f.samplerate != SAMPLE_RATE:
            raise HubertkitError(f"{path} is {f.samplerate} Hz; hubertkit needs {SAMPLE_RATE} Hz audio (resample it first)")
        carry = np.zeros(0, np.float32)
        for block in f.blocks(BLOCK, dtype="float32", always_2d=True):
            x = np.concatenate([carry, block.mean(axis=1)])
            n = max(0, (len(x) - FRAME) // HOP + 1)
            if n:
                frames = np.lib.stride_tricks.sliding_window_view(x, FRAME)[::HOP][:n]
                energies.append(10 * np.log10((frames.astype(np.float64) ** 2).mean(axis=1) + 1e-10))
            carry = x[n * HOP :]
    if not energies:
        return []
    energy = np.concatenate(energies)
    voiced = energy > max(np.percentile(energy, 95) + THRESHOLD_DB, -80.0)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], voiced.astype(np.int8), [0]])))
    runs = [(int(a) * HOP, (int(b) - 1) * HOP + FRAME) for a, b in zip(edges[::2], edges[1::2])]
    merged: list[tuple[int, int]] = []
    for a, b in runs:
        if merged and a - merged[-1][1] < MIN_SILENCE * SAMPLE_RATE:
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return merged


def pack_spans(intervals: list[tuple[int, int]], total: int, max_seconds: float = MAX_SECONDS,
               min_seconds: float = MIN_SECONDS) -> list[tuple[int, int]]:
    """``(start, num_samples)`` spans of at most ``max_seconds``, each from the start of a
    voiced stretch to the end of a later one; a stretch longer than the limit is cut into
    equal pieces; spans under ``min_seconds`` are left out."""
    limit, shortest = int(max_seconds * SAMPLE_RATE), int(min_seconds * SAMPLE_RATE)
    pieces = []
    for a, b in ((max(0, a), min(b, total)) for a, b in intervals):
        if b <= a:
            continue
        parts = -(-(b - a) // limit)
        cuts = [a + (b - a) * k // parts for k in range(parts + 1)]
        pieces += list(zip(cuts[:-1], cuts[1:]))
    spans: list[tuple[int, int]] = []
    for a, b in pieces:
        if spans and b - spans[-1][0] <= limit:
            spans[-1] = (spans[-1][0], b)
        else:
            spans.append((a, b))
    return [(a, b - a) for a, b in spans if b - a >= shortest]


def _recording_spans(task: tuple[Path, Path, float, float]) -> list[tuple[int, int]]:
    """One recording's spans, from the resume cache when it was segmented before with
    the same settings and is unchanged since."""
    path, cache_dir, max_seconds, min_seconds = task
    st = path.stat()
    vad = path.with_suffix(".json")
    stamp = [st.st_size, st.st_mtime_ns, max_seconds, min_seconds, vad.stat().st_mtime_ns if vad.is_file() else None]
    cache = cache_dir / (hashlib.sha256(str(path).encode()).hexdigest()[:20] + ".json")
    try:
        found = json.loads(cache.read_text())
        if found["stamp"] == stamp:
            return [tuple(s) for s in found["spans"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        info = sf.info(str(path))
        if info.samplerate != SAMPLE_RATE:
            raise HubertkitError(f"{path} is {info.samplerate} Hz; hubertkit needs {SAMPLE_RATE} Hz audio (resample it first)")
        total = info.frames
        spans = pack_spans(voiced_intervals(path), total, max_seconds, min_seconds)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise HubertkitError(f"cannot read audio {path}: {e}") from None
    write_text(cache, json.dumps({"path": str(path), "stamp": stamp, "spans": spans}) + "\n")
    return spans


def segment(audio_dir: str | os.PathLike, dest: str | os.PathLike, ext: str = "flac", max_seconds: float = MAX_SECONDS,
            min_seconds: float = MIN_SECONDS, valid_percent: float = 0.01, seed: int = 42, jobs: int = 4,
            progress: bool = False) -> dict:
    """``hubertkit segment AUDIO_DIR --dest DIR``: ``train.tsv`` (and ``valid.tsv``) of
    spans of every recording under ``audio_dir``. Returns counts and hours per split."""
    root = Path(os.path.realpath(audio_dir))
    if not root.is_dir():
        raise HubertkitError(f"audio directory {audio_dir} does not exist")
    if not 0 < min_seconds <= max_seconds:
        raise HubertkitError(f"need 0 < --min-seconds <= --max-seconds, got {min_seconds} and {max_seconds}")
    if not 0 <= valid_percent <= 1:
        raise HubertkitError(f"--valid-percent must be in [0, 1], got {valid_percent}")
    if jobs < 1:
        raise HubertkitError(f"--jobs must be at least 1, got {jobs}")
    files = sorted(p for p in root.rglob(f"*.{ext.lstrip('.')}") if p.is_file())
    if not files:
        raise HubertkitError(f"no *.{ext.lstrip('.')} files under {root}")
    cache_dir = Path(dest) / ".segment"
    cache_dir.mkdir(parents=True, exist_ok=True)
    rand = random.Random(seed)
    splits = ["train", "valid"] if valid_percent > 0 else ["train"]
    spans_in, samples = dict.fromkeys(splits, 0), dict.fromkeys(splits, 0)
    found = ordered_map(_recording_spans, [(p, cache_dir, max_seconds, min_seconds) for p in files], jobs)
    with contextlib.ExitStack() as stack:  # each manifest line by line (12 M spans for Libri-Light), appearing at the end
        write = {split: stack.enter_context(atomic_lines(manifest_path(dest, split))) for split in splits}
        for split in splits:
            write[split](f"{root}\n")
        for path, spans in zip(files, progress_bar(found, total=len(files), unit="rec", desc="segment",
                                                   disable=not progress)):
            split = "valid" if rand.random() < valid_percent else "train"
            rel = os.path.relpath(path, root)
            write[split]("".join(f"{rel}\t{n}\t{start}\n" for start, n in spans))
            spans_in[split] += len(spans)
            samples[split] += sum(n for _, n in spans)
    out = {split: {"spans": spans_in[split], "hours": samples[split] / SAMPLE_RATE / 3600} for split in splits}
    return {**out, "recordings": len(files)}
