"""Dumping frame features of a manifest shard to ``.npy``/``.len``, in parallel if asked.

A feature extractor is a callable ``(waveform) -> [frames, dim]`` array; it runs on
``jobs`` threads while the calling thread writes the shards in manifest order, so the
files are identical whatever the number of jobs.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from hubertkit.data.audio import SAMPLE_RATE, read_audio
from hubertkit.data.manifest import Utterance, manifest_path, read_manifest
from hubertkit.data.shards import ShardWriter, manifest_fingerprint
from hubertkit.errors import HubertkitError
from hubertkit.features.mfcc import mfcc_with_deltas
from hubertkit.parallel import ordered_map
from hubertkit.progress import progress_bar

log = logging.getLogger(__name__)

Extractor = Callable[[np.ndarray], np.ndarray]


@dataclass
class DumpSummary:
    files: list[str]
    utterances: int
    frames: int
    audio_seconds: float
    seconds: float

    def __str__(self) -> str:
        speed = self.audio_seconds / max(self.seconds, 1e-9)
        return (
            f"wrote {len(self.files)} file(s), {self.utterances} utterances, {self.frames} frames "
            f"({self.audio_seconds / 3600:.2f} h of audio) in {self.seconds:.1f} s, {speed:.0f}x real time"
        )


def resolve_ranks(rank: str | int, nshard: int) -> list[int]:
    """``RANK`` as an int, ``all`` (every rank, here), or ``auto`` (from SLURM or torchrun)."""
    if nshard < 1:
        raise HubertkitError(f"NSHARD (--nshard) must be at least 1, got {nshard}")
    if isinstance(rank, int) or (isinstance(rank, str) and rank.lstrip("-").isdigit()):
        if not 0 <= int(rank) < nshard:
            raise HubertkitError(f"RANK {rank} is outside 0..{nshard - 1} for NSHARD={nshard}")
        return [int(rank)]
    if rank == "all":
        return list(range(nshard))
    if rank == "auto":
        for var, count in (("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT"), ("RANK", "WORLD_SIZE")):
            if var in os.environ:
                values = {v: os.environ[v] for v in (var, count) if v in os.environ}
                bad = [f"{v}={x!r}" for v, x in values.items() if not x.strip().isdigit()]
                if bad:
                    raise HubertkitError(f"RANK=auto: {', '.join(bad)} is not a non-negative integer")
                if count in values and int(values[count]) != nshard:
                    raise HubertkitError(f"{count}={values[count]} but NSHARD={nshard}; they must agree")
                if int(values[var]) >= nshard:
                    raise HubertkitError(f"{var}={values[var]} is outside 0..{nshard - 1} for NSHARD={nshard}")
                return [int(values[var])]
        raise HubertkitError("RANK=auto needs SLURM_ARRAY_TASK_ID or torchrun's RANK in the environment")
    raise HubertkitError(f"RANK must be an integer, 'all' or 'auto', got {rank!r}")


class _Job:
    """Reads one utterance and extracts its features."""

    def __init__(self, extractor: Extractor, where: str):
        self.extractor, self.where = extractor, where

    def __call__(self, utt: Utterance) -> np.ndarray:
        wav = read_audio(utt, where=self.where)
        try:
            feats = np.asarray(self.extractor(wav), dtype=np.float32)
        except HubertkitError as e:
            raise HubertkitError(f"{self.where}:{utt.line}: {utt.path}: {e}") from None
        if len(feats) == 0:  # kept, as fairseq does (the line stays in step), but said
            log.warning("%s:%d: %s (%d samples) is shorter than one frame: 0 frames", self.where, utt.line, utt.path, len(wav))
        return feats


def dump_features(
    tsv_dir: str | os.PathLike,
    split: str,
    nshard: int,
    rank: str | int,
    feat_dir: str | os.PathLike,
    extractor: Extractor,
    dim: int,
    jobs: int = 1,
    progress: bool = True,
) -> DumpSummary:
    """Write ``{split}_{rank}_{nshard}.npy/.len`` for each requested rank."""
    start = time.time()
    if nshard < 1:
        raise HubertkitError(f"NSHARD must be at least 1, got {nshard}")
    manifest = read_manifest(manifest_path(tsv_dir, split))
    ranks = resolve_ranks(rank, nshard)
    shards = [(r, manifest.shard(nshard, r)) for r in ranks]
    total = sum(len(u) for _, u in shards)
    summary = DumpSummary([], 0, 0, 0.0, 0.0)
    with progress_bar(total=total, unit="utt", desc=f"features {split}", disable=not progress) as bar:
        for r, utts in shards:
            with ShardWriter(feat_dir, split, r, nshard, dim, source=manifest_fingerprint(manifest)) as writer:
                for utt, feats in zip(utts, ordered_map(_Job(extractor, str(manifest.path)), utts, jobs)):
                    writer.append(feats)
                    summary.audio_seconds += utt.num_samples / SAMPLE_RATE
                    bar.update()
            summary.files += [str(p) for p in writer.paths]
            summary.utterances += writer.utterances
            summary.frames += writer.frames
    summary.seconds = time.time() - start
    return summary


def mfcc_extractor(wav: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return mfcc_with_deltas(torch.from_numpy(wav)).numpy()


def dump_mfcc(tsv_dir, split, nshard, rank, feat_dir, jobs: int = 1, progress: bool = True) -> DumpSummary:
    """fairseq's ``dump_mfcc_feature.py``: 39-dim MFCC + Δ + ΔΔ at 100 Hz."""
    return dump_features(tsv_dir, split, nshard, rank, feat_dir, mfcc_extractor, 39, jobs, progress)
