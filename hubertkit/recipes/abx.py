"""``hubertkit abx``: ABX error rates (``cluster/abx.py``) of a model's layers, of a feature
dump, or of discrete units, on a split whose phones are aligned."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from hubertkit.cluster.abx import (
    Items,
    abx_error_rates,
    check_abx_options,
    items_from_alignments,
    read_item_file,
    write_item_file,
)
from hubertkit.cluster.kmeans import load_kmeans
from hubertkit.data.alignments import read_alignments
from hubertkit.data.audio import SAMPLE_RATE, read_audio
from hubertkit.data.manifest import manifest_path, read_manifest, utterance_key
from hubertkit.data.shards import find_nshard, read_utterances
from hubertkit.data.speakers import speaker_from_path
from hubertkit.errors import HubertkitError
from hubertkit.fileio import write_text
from hubertkit.model.io import load_model
from hubertkit.progress import progress_bar


def load_items(alignments: str | os.PathLike | None = None, item_file: str | os.PathLike | None = None) -> Items:
    """The items: from a ZeroSpeech ``.item`` file, or made from phone alignments (the
    speaker of an utterance is its folder, as ``hubertkit speakers`` reads it)."""
    if (alignments is None) == (item_file is None):
        raise HubertkitError("give the phone alignments (--alignments) or a ZeroSpeech item file (--item), one of them")
    if item_file is not None:
        return read_item_file(item_file)
    aligned = read_alignments(alignments)
    return items_from_alignments(aligned, {k: speaker_from_path(k) for k in aligned})


def layer_features(model, manifest, keys: set[str], progress: bool = True) -> list[dict[str, np.ndarray]]:
    """Every layer's frames (0: the transformer's input, L: layer L's output) of the
    manifest's utterances named in ``keys``: ``[layer][utterance key] -> [frames, dim]``."""
    out = [{} for _ in range(model.cfg.encoder_layers + 1)]
    wanted = [u for u in manifest.utterances if u.key in keys]
    with torch.inference_mode():
        for utt in progress_bar(wanted, unit="utt", desc="abx: encoding", disable=not progress):
            x = model.prepare(torch.from_numpy(read_audio(utt, where=str(manifest.path)))[None])
            key = utt.key
            for store, h in zip(out, model.hidden_states(x)):
                store[key] = h[0].float().numpy()
    return out


def _frame_rate(frames: dict[str, np.ndarray], manifest) -> float:
    """Frames per second of a dump or of units, from their lengths and the audio's."""
    seconds = {u.key: u.num_samples / SAMPLE_RATE for u in manifest.utterances}
    ratios = [len(v) / seconds[k] for k, v in frames.items() if seconds.get(k)]
    if not ratios:
        raise HubertkitError("no utterance of the features is in the manifest: cannot tell their frame rate; give --rate")
    return float(np.round(np.median(ratios)))


MAX_ONE_HOT = 1 << 16  # distinct unit ids at most as one-hot vectors (beyond that, give --km)


def _unit_ids(values, where: str) -> np.ndarray:
    """A sequence of unit ids, refused unless every one is a non-negative integer."""
    if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise HubertkitError(f"{where}: units must be a list of integers, got {str(values)[:60]}")
    ids = np.asarray(values, dtype=object)
    if len(ids) and (min(values) < 0 or max(values) >= 2**63):
        raise HubertkitError(f"{where}: unit ids must be non-negative integers below 2**63, got "
                             f"{min(values) if min(values) < 0 else max(values)}")
    return ids.astype(np.int64)


def _read_unit_file(path: Path, manifest) -> dict[str, np.ndarray]:
    """The units of a ``hubertkit units`` JSONL or a ``.km`` label file, by utterance key."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise HubertkitError(f"{path} is not UTF-8 text (byte {e.start})") from None
    if path.suffix == ".jsonl":
        seqs = {}
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                utt, units = record["utt"], record["units"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise HubertkitError(f"{path}:{number}: expected {{'utt': ..., 'units': [...]}} ({e})") from None
            seqs[utterance_key(str(utt))] = _unit_ids(units, f"{path}:{number}")
        return seqs
    if len(lines) != len(manifest):
        raise HubertkitError(f"{path} has {len(lines)} lines but {manifest.path} lists {len(manifest)} utterances")
    seqs = {}
    for number, (u, line) in enumerate(zip(manifest.utterances, lines), start=1):
        tokens = line.split()
        if not all(t.isascii() and t.isdigit() for t in tokens):
            raise HubertkitError(f"{path}:{number}: labels must be non-negative integers, got {line[:60]!r}")
        seqs[u.key] = _unit_ids([int(t) for t in tokens], f"{path}:{number}")
    return seqs


def _units(path: Path, manifest, km_path, trust_pickle: bool) -> dict[str, np.ndarray]:
    """Units of a ``hubertkit units`` JSONL or a ``.km`` label file, one-hot, or as their
    k-means centroids when ``km_path`` is given."""
    seqs = _read_unit_file(path, manifest)
    if km_path:
        centroids = load_kmeans(km_path, trust_pickle).centroids
        if max((s.max() for s in seqs.values() if len(s)), default=0) >= len(centroids):
            raise HubertkitError(f"{path} holds units beyond the {len(centroids)} clusters of {km_path}")
        return {k: centroids[s] for k, s in seqs.items()}
    # one-hot over the ids that occur: the angle between two one-hot frames depends only on
    # whether their ids are equal, so this scores as a one-hot over every id would
    ids = np.unique(np.concatenate([np.zeros(0, np.int64), *seqs.values()]))
    if len(ids) > MAX_ONE_HOT:
        raise HubertkitError(f"{path} holds {len(ids)} distinct units, too many for one-hot vectors (at most "
                             f"{MAX_ONE_HOT}); give their k-means model (--km)")
    eye = np.eye(max(len(ids), 1), dtype=np.float32)
    return {k: eye[np.searchsorted(ids, s)] for k, s in seqs.items()}


def abx(source: str | os.PathLike, tsv_dir: str | os.PathLike, split: str, alignments=None, item_file=None,
        layer: int | str = "all", rate: float | None = None, km: str | os.PathLike | None = None,
        modes: tuple[str, ...] | None = ("within", "across"), max_size_group: int = 10, max_x_across: int = 5, seed: int = 0,
        write_items: str | os.PathLike | None = None, trust_pickle: bool = False, progress: bool = True) -> dict:
    """``hubertkit abx SOURCE TSV_DIR SPLIT``: ABX error rates of ``SOURCE`` on the split's
    aligned phones. ``SOURCE``: a model checkpoint (any format hubertkit reads; ``layer``
    a number or ``"all"``), a feature dump folder (``dump-mfcc``, ``dump-hubert``), or units
    (a ``hubertkit units`` JSONL or a ``.km`` label file: one-hot, or ``km``'s centroids)."""
    check_abx_options(1.0 if rate is None else rate, max_size_group, max_x_across, seed)  # before any work
    items = load_items(alignments, item_file)
    if write_items:
        write_item_file(items, write_items)
    manifest = read_manifest(manifest_path(tsv_dir, split))
    source = Path(source)
    kw = dict(modes=modes, max_size_group=max_size_group, max_x_across=max_x_across, seed=seed)
    if source.is_dir() and not (source / "config.json").is_file():  # a feature dump
        find_nshard(source, split)
        shards = read_utterances(source, split)
        if len(shards) != len(manifest):
            raise HubertkitError(f"{source} holds {len(shards)} utterances of {split}, {manifest.path} lists {len(manifest)}")
        feats = {u.key: f for u, f in zip(manifest.utterances, shards)}
        found = {"features": (feats, _frame_rate(feats, manifest) if rate is None else rate)}
    elif source.suffix in (".jsonl", ".km"):
        feats = _units(source, manifest, km, trust_pickle)
        found = {"units": (feats, _frame_rate(feats, manifest) if rate is None else rate)}
    else:
        model = load_model(source, trust_pickle)
        count = model.cfg.encoder_layers
        layers = list(range(count + 1)) if layer == "all" else [int(layer)]
        if not all(0 <= n <= count for n in layers):
            raise HubertkitError(f"--layer must be in 0..{count} (0: the transformer's input) or 'all', got {layer}")
        every = layer_features(model, manifest, set(items.files), progress)
        found = {f"layer {n}": (every[n], SAMPLE_RATE / model.cfg.downsample if rate is None else rate) for n in layers}
    scores = {}
    for name, (feats, r) in progress_bar(found.items(), unit="layer", desc="abx: scoring",
                                         disable=not progress or len(found) == 1):
        scores[name] = abx_error_rates(feats, items, r, **kw)
    return {"source": str(source), "split": split, "items": len(items), "scores": scores}


def format_abx(result: dict) -> str:
    modes = sorted({m for s in result["scores"].values() for m in s}, reverse=True)
    lines = [f"ABX error (%) of {result['source']} on {result['split']} ({result['items']} items)",
             "| | " + " | ".join(modes) + " |", "|---|" + "---:|" * len(modes)]
    lines += [f"| {name} | " + " | ".join(f"{100 * s[m]:.2f}" for m in modes) + " |" for name, s in result["scores"].items()]
    return "\n".join(lines)


def save_abx(result: dict, out: str | os.PathLike) -> None:
    write_text(out, json.dumps(result, indent=1) + "\n")
