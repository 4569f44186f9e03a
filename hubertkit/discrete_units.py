"""Discrete units: a HuBERT layer quantised by a k-means model, per utterance — what
unit-based ASR, speech language models and unit vocoders consume."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Iterator


from hubertkit.progress import progress_bar
from hubertkit.cluster.kmeans import load_kmeans
from hubertkit.data.audio import read_audio
from hubertkit.data.manifest import read_manifest
from hubertkit.errors import HubertkitError
from hubertkit.features.hubert import HubertLayerFeatures
from hubertkit.fileio import atomic_open


def dedup(units: list[int]) -> tuple[list[int], list[int]]:
    """Runs of repeated units collapsed: the units and each run's length."""
    out, durations = [], []
    for u in units:
        if out and out[-1] == u:
            durations[-1] += 1
        else:
            out.append(u)
            durations.append(1)
    return out, durations


def units(ckpt, km_path, tsv, layer: int, max_chunk: int = 1600000, trust_pickle: bool = False,
          progress: bool = False) -> Iterator[dict]:
    """For each utterance of the manifest ``tsv``: ``{"utt", "units", "dedup", "durations"}``."""
    km = load_kmeans(km_path, trust_pickle)
    reader = HubertLayerFeatures(ckpt, layer, max_chunk, trust_pickle)
    if km.dim != reader.dim:
        raise HubertkitError(f"{km_path} was fitted on {km.dim}-dim features; layer {layer} of {ckpt} has {reader.dim} dims")
    manifest = read_manifest(tsv)
    for utt in progress_bar(manifest.utterances, unit="utt", desc="units", disable=not progress):
        labels = km.predict(reader(read_audio(utt, where=str(manifest.path)))).tolist()
        short, durations = dedup(labels)
        yield {"utt": os.path.relpath(utt.path, manifest.root), "units": labels, "dedup": short, "durations": durations}


def write_units(ckpt, km_path, tsv, layer: int, out: str | None = None, dedup_only: bool = False, **kw) -> str:
    """``hubertkit units``: JSONL to ``out`` (atomically) or stdout."""
    def lines():
        for record in units(ckpt, km_path, tsv, layer, progress=out is not None, **kw):
            if dedup_only:
                record = {"utt": record["utt"], "units": record["dedup"], "durations": record["durations"]}
            yield json.dumps(record) + "\n"

    if out is None:
        for line in lines():
            sys.stdout.write(line)
        return ""
    n = 0
    with atomic_open(Path(out)) as f:
        for line in lines():
            f.write(line)
            n += 1
    return f"wrote {out}: {n} utterances"
