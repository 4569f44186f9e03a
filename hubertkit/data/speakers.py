"""Who speaks each utterance: ``{split}.spk`` (one speaker per manifest line) and
``dict.spk.txt`` (train's speakers, in classifier order), beside the pitch shards in
``task.feat_dir``.

Speakers come from a map file (``utterance<TAB>speaker``; the utterance is the manifest
path with or without its extension, or just the file's stem) or from the path itself:
LibriSpeech's ``speaker/chapter/speaker-chapter-utt.flac`` gives the grandparent
directory, any other layout the parent directory (``speaker/utt.flac``).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import numpy as np

from hubertkit.data.manifest import lookup_by_path, manifest_path, read_manifest
from hubertkit.errors import HubertkitError
from hubertkit.fileio import write_text

SPEAKER_DICT = "dict.spk.txt"


def speaker_from_path(path: str) -> str:
    p = PurePosixPath(path.replace(os.sep, "/"))
    parts = p.parent.parts
    if len(parts) >= 2 and p.stem.split("-")[0] == parts[-2]:  # LibriSpeech: 103/1240/103-1240-0000.flac
        return parts[-2]
    if not parts:
        raise HubertkitError(
            f"cannot tell the speaker of {path!r} from its path (no directory): give a speaker map (--map)"
        )
    return parts[-1]


def read_speaker_map(path: str | os.PathLike) -> dict[str, str]:
    table = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2 or not all(f.strip() for f in fields):
            raise HubertkitError(f"{path}:{n}: expected 'utterance<TAB>speaker', got {line!r}")
        table[fields[0].strip()] = fields[1].strip()
    return table


def utterance_speakers(tsv: str | os.PathLike, speaker_map: dict[str, str] | None = None) -> list[str]:
    manifest = read_manifest(tsv)
    paths = [u.name for u in manifest.utterances]  # as the manifest lists them
    if speaker_map is None:
        return [speaker_from_path(p) for p in paths]
    return [lookup_by_path(speaker_map, p, "speaker in the speaker map", str(tsv)) for p in paths]


def write_speakers(tsv_dir, splits: list[str], out_dir, map_file: str | os.PathLike | None = None) -> dict[str, int]:
    """Write ``{split}.spk`` for each split and ``dict.spk.txt`` from the first (train).

    Returns the number of distinct speakers per split."""
    table = read_speaker_map(map_file) if map_file else None
    per_split = {s: utterance_speakers(manifest_path(tsv_dir, s), table) for s in splits}
    vocab = sorted(set(per_split[splits[0]]))
    for split, names in per_split.items():
        write_text(Path(out_dir) / f"{split}.spk", "".join(f"{n}\n" for n in names))
    write_text(Path(out_dir) / SPEAKER_DICT, "".join(f"{n}\n" for n in vocab))
    return {s: len(set(n)) for s, n in per_split.items()}


def read_speakers(feat_dir: str | os.PathLike, split: str, count: int) -> tuple[np.ndarray, list[str]]:
    """Speaker index per utterance (-100, ignored by the loss, for a speaker train never
    saw) and the speaker vocabulary."""
    d = Path(feat_dir)
    for p in (d / f"{split}.spk", d / SPEAKER_DICT):
        if not p.is_file():
            raise HubertkitError(f"{p} does not exist: run 'hubertkit speakers' to write the speaker files into task.feat_dir")
    names = (d / f"{split}.spk").read_text().splitlines()
    vocab = (d / SPEAKER_DICT).read_text().splitlines()
    if len(names) != count:
        raise HubertkitError(f"{d / f'{split}.spk'} has {len(names)} lines but the manifest lists {count} utterances")
    index = {n: i for i, n in enumerate(vocab)}
    return np.array([index.get(n, -100) for n in names], dtype=np.int32), vocab
