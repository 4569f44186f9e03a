"""Label files (``.km``: one line of integer labels per utterance), the sidecar that
records which k-means model made them, and fairseq's dictionary ``dict.km.txt``."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np

from hubertkit.data.label_store import open_store
from hubertkit.errors import HubertkitError
from hubertkit.fileio import atomic_open, write_text

# Shard label files are {split}_{rank}_{nshard}.{label}; merged ones are {split}.{label}.
_SHARD_RE = re.compile(r"_\d+_\d+$")


def sidecar_path(label_path: str | os.PathLike) -> Path:
    return Path(f"{label_path}.json")


def write_sidecar(label_path: str | os.PathLike, info: dict) -> None:
    write_text(sidecar_path(label_path), json.dumps(info, indent=1, sort_keys=True) + "\n")


def read_sidecar(label_path: str | os.PathLike) -> dict | None:
    """What made a label file (k-means fingerprint, clusters, utterances), if recorded."""
    path = sidecar_path(label_path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise HubertkitError(f"{path} is not valid JSON: {e}") from None


def made_at_rate(frames: list[int], seconds: list[float], rate: float) -> float | None:
    """The rate sequences were really made at, when they are systematically 2x or 0.5x as
    long as ``rate`` implies (labels made at 50 Hz read at 100 Hz, or the reverse); else None."""
    ratio = float(np.median(np.asarray(frames, dtype=float) / rate / np.maximum(np.asarray(seconds, dtype=float), 1e-9)))
    for factor in (2.0, 0.5):
        if abs(ratio - factor) < 0.1 * factor:
            return rate * factor
    return None


def read_labels(path: str | os.PathLike) -> list[list[int]]:
    path = Path(path)
    if not path.is_file():
        raise HubertkitError(f"label file {path} does not exist")
    out = []
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            try:
                out.append([int(v) for v in line.split()])
            except ValueError:
                raise HubertkitError(f"{path}:{number}: labels must be integers, got {line[:60]!r}") from None
    return out


def merge_labels(lab_dir: str | os.PathLike, split: str, nshard: int, label: str = "km") -> dict:
    """``cat {split}_{0..nshard-1}_{nshard}.km > {split}.km``, refusing missing shards and
    shards made by different k-means models."""
    lab_dir = Path(lab_dir)
    shards = [lab_dir / f"{split}_{rank}_{nshard}.{label}" for rank in range(nshard)]
    missing = [str(p) for p in shards if not p.is_file()]
    if missing:
        raise HubertkitError(f"missing label shard(s): {', '.join(missing)} (run dump-labels for those ranks)")
    infos = [read_sidecar(p) for p in shards]
    known = {i["kmeans"] for i in infos if i}
    if len(known) > 1:
        raise HubertkitError(f"label shards of {split} in {lab_dir} come from different k-means models: {sorted(known)}")
    out = label_path(lab_dir, split, label)
    utterances = 0
    with atomic_open(out, "wb") as f:
        for p, shard_info in zip(shards, infos):
            data = p.read_bytes()
            if data and not data.endswith(b"\n"):
                raise HubertkitError(f"{p} does not end with a newline (truncated file?)")
            lines = data.count(b"\n")
            if shard_info and shard_info.get("utterances") not in (None, lines):  # cut at a line boundary
                raise HubertkitError(f"{p} has {lines} lines but dump-labels wrote {shard_info['utterances']} "
                                     "(truncated or edited?); re-run dump-labels for that rank")
            utterances += lines
            f.write(data)
    info = {"utterances": utterances, "split": split, "merged_from": [p.name for p in shards]}
    if all(infos):
        info.update({k: infos[0][k] for k in ("kmeans", "kmeans_path", "n_clusters")})
        info["frames"] = sum(i["frames"] for i in infos)
        write_sidecar(out, info)
    else:  # an older sidecar would vouch for labels it never saw
        sidecar_path(out).unlink(missing_ok=True)
    return {"path": str(out), **info}


def label_path(label_dir: str | os.PathLike, split: str, label: str = "km") -> Path:
    """A split's merged label file, ``{split}.{label}`` (fairseq's name), in ``label_dir``."""
    return Path(label_dir) / f"{split}.{label}"


def dict_path(label_dir: str | os.PathLike, label: str = "km") -> Path:
    """A label set's fairseq dictionary, ``dict.{label}.txt``, in ``label_dir``."""
    return Path(label_dir) / f"dict.{label}.txt"


MAX_CLUSTERS = 1 << 20  # make-dict writes a line per id: a stray huge label would exhaust memory


def make_dict(lab_dir: str | os.PathLike, label: str = "km", n_clusters: int | None = None) -> dict:
    """Write ``dict.{label}.txt`` (``label count``) from the merged label files in ``lab_dir``,
    building their label stores (``label_store.py``) on the way.

    Every cluster id ``0 .. n_clusters-1`` gets a line, also those no frame uses, so
    that no valid label is "unknown" to the model. ``n_clusters`` comes from the label
    files' sidecars unless given.
    """
    lab_dir = Path(lab_dir)
    files = sorted(p for p in lab_dir.glob(f"*.{label}") if not _SHARD_RE.search(p.name[: -len(label) - 1]))
    if not files:
        raise HubertkitError(f"no merged label files *.{label} in {lab_dir} (run merge-labels first)")
    counts: Counter[int] = Counter()
    recorded = set()
    for p in files:
        store = open_store(p, progress=True)  # its counts; and the store training reads is ready
        counts.update(dict(zip(store.ids.tolist(), store.counts.tolist())))
        info = read_sidecar(p)
        if info and "n_clusters" in info:
            recorded.add(int(info["n_clusters"]))
    if not counts and n_clusters is None and not recorded:
        raise HubertkitError(f"the label files in {lab_dir} ({', '.join(p.name for p in files)}) hold no labels, and no "
                             "sidecar says how many clusters there are: give --n-clusters, or check the dump")
    if len(recorded) > 1:
        raise HubertkitError(f"label files in {lab_dir} come from k-means models with {sorted(recorded)} clusters")
    if n_clusters is not None and not 1 <= n_clusters <= MAX_CLUSTERS:
        raise HubertkitError(f"--n-clusters must be in 1..{MAX_CLUSTERS} (the dictionary lists every id), got {n_clusters}")
    if n_clusters is None:
        n_clusters = recorded.pop() if recorded else max(counts) + 1
        if n_clusters > MAX_CLUSTERS:
            raise HubertkitError(f"labels in {lab_dir} reach {n_clusters - 1}: dict.{label}.txt lists every id from 0, "
                                 f"and ids above {MAX_CLUSTERS - 1} are not k-means labels; check the label files")
    if counts and (min(counts) < 0 or max(counts) >= n_clusters):
        raise HubertkitError(f"labels in {lab_dir} range over {min(counts)}..{max(counts)}, outside 0..{n_clusters - 1}")
    out = dict_path(lab_dir, label)
    write_text(out, "".join(f"{i} {counts.get(i, 0)}\n" for i in range(n_clusters)))
    return {"path": str(out), "n_clusters": n_clusters, "files": [p.name for p in files], "unused": n_clusters - len(counts)}


def read_dict(path: str | os.PathLike) -> list[str]:
    """Symbols of a fairseq dictionary file, in order (without fairseq's 4 specials)."""
    path = Path(path)
    if not path.is_file():
        raise HubertkitError(f"dictionary {path} does not exist (run make-dict)")
    symbols, seen = [], {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2 or not parts[1].lstrip("-").isdigit():
            raise HubertkitError(f"{path}:{number}: expected 'symbol count', got {line!r}")
        if parts[0] in seen:  # fairseq refuses these too: one symbol, two classes
            raise HubertkitError(f"{path}:{number}: symbol {parts[0]!r} is listed twice (first on line {seen[parts[0]]})")
        seen[parts[0]] = number
        symbols.append(parts[0])
    if not symbols:
        raise HubertkitError(f"dictionary {path} is empty: every label would be unknown (run make-dict)")
    return symbols
