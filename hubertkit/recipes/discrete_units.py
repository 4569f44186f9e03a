"""Discrete units: a HuBERT layer quantised by a k-means model, per utterance — what
unit-based ASR, speech language models and unit vocoders consume."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Iterator

from hubertkit.cluster.kmeans import load_kmeans
from hubertkit.data.audio import read_audio
from hubertkit.data.manifest import read_manifest
from hubertkit.data.unit_vocab import dedup
from hubertkit.errors import HubertkitError
from hubertkit.features.dump import resolve_ranks
from hubertkit.features.hubert import MAX_CHUNK, HubertLayerFeatures
from hubertkit.fileio import atomic_open
from hubertkit.progress import progress_bar


def unit_labeller(ckpt, km_path, layer: int, max_chunk: int = MAX_CHUNK, trust_pickle: bool = False):
    """``(waveform) -> list of unit ids``: layer ``layer`` of ``ckpt`` quantised by ``km_path``."""
    km = load_kmeans(km_path, trust_pickle)
    reader = HubertLayerFeatures(ckpt, layer, max_chunk, trust_pickle)
    if km.dim != reader.dim:
        raise HubertkitError(f"{km_path} was fitted on {km.dim}-dim features; layer {layer} of {ckpt} has {reader.dim} dims")
    return lambda wav: km.predict(reader(wav)).tolist()


def units(ckpt, km_path, tsv, layer: int, max_chunk: int = MAX_CHUNK, trust_pickle: bool = False,
          progress: bool = False, nshard: int = 1, rank: int = 0) -> Iterator[dict]:
    """For each utterance of shard ``rank`` of ``nshard`` of the manifest ``tsv`` (fairseq's
    contiguous shards, as the dumps): ``{"utt", "units", "dedup", "durations"}``."""
    labeller = unit_labeller(ckpt, km_path, layer, max_chunk, trust_pickle)
    yield from _shard_units(labeller, read_manifest(tsv), nshard, rank, progress)


def _shard_units(labeller, manifest, nshard: int, rank: int, progress: bool) -> Iterator[dict]:
    for utt in progress_bar(manifest.shard(nshard, rank), unit="utt", desc=f"units {rank}/{nshard}", disable=not progress):
        labels = labeller(read_audio(utt, where=str(manifest.path)))
        short, durations = dedup(labels)
        yield {"utt": utt.name, "units": labels, "dedup": short, "durations": durations}


def units_from_labels(tsv, label_file) -> Iterator[dict]:
    """``{"utt", "units"}`` per utterance from a label file that follows the manifest
    (``{split}.km``): MFCC k-means labels, or any iteration's, as units."""
    manifest = read_manifest(tsv)
    lines = Path(label_file).read_text().splitlines()
    if len(lines) != len(manifest):
        raise HubertkitError(f"{label_file} has {len(lines)} lines but {manifest.path} lists {len(manifest)} utterances")
    for utt, line in zip(manifest.utterances, lines):
        yield {"utt": utt.name, "units": [int(x) for x in line.split()]}


def save_units(records, out: str | os.PathLike) -> int:
    """Unit records as JSONL, written atomically; returns how many."""
    n = 0
    with atomic_open(Path(out)) as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
            n += 1
    return n


def shard_file(out: str | os.PathLike, rank: int, nshard: int) -> Path:
    """``units.jsonl`` → ``units_{rank}_{nshard}.jsonl``, the dumps' naming; concatenated in
    rank order the shards are the whole manifest's units."""
    out = Path(out)
    return out if nshard == 1 else out.with_name(f"{out.stem}_{rank}_{nshard}{out.suffix}")


def write_units(ckpt, km_path, tsv, layer: int, out: str | None = None, dedup_only: bool = False,
                nshard: int = 1, rank: int | str = 0, max_chunk: int = MAX_CHUNK, trust_pickle: bool = False) -> str:
    """``hubertkit units``: JSONL to ``out`` (atomically; one file per shard) or stdout."""

    ranks = resolve_ranks(rank, nshard)
    if out is None and nshard > 1:
        raise HubertkitError("with NSHARD > 1 give --out FILE: each shard writes FILE_{rank}_{nshard}")

    manifest = read_manifest(tsv)
    labeller = unit_labeller(ckpt, km_path, layer, max_chunk, trust_pickle)  # once, for every rank

    def records(r):
        for record in _shard_units(labeller, manifest, nshard, r, progress=out is not None):
            if dedup_only:
                record = {"utt": record["utt"], "units": record["dedup"], "durations": record["durations"]}
            yield record

    if out is None:
        for record in records(0):
            sys.stdout.write(json.dumps(record) + "\n")
        return ""
    return "; ".join(f"wrote {shard_file(out, r, nshard)}: {save_units(records(r), shard_file(out, r, nshard))} utterances"
                     for r in ranks)
