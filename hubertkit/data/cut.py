"""``hubertkit cut``: a split's spans or archive members written out as files of their
own, with a plain fairseq manifest: what fairseq (or any tool that reads one file per
utterance) needs from a corpus that hubertkit reads in place."""

from __future__ import annotations

import hashlib
import os
from pathlib import PurePosixPath

import numpy as np

from hubertkit.data.audio import standalone_bytes, standalone_name
from hubertkit.data.manifest import Manifest, Utterance, manifest_path, read_manifest
from hubertkit.data.pack import output_folder
from hubertkit.errors import HubertkitError
from hubertkit.fileio import atomic_lines, atomic_open
from hubertkit.parallel import ordered_map
from hubertkit.progress import progress_bar


def cut(tsv_dir: str | os.PathLike, split: str, dest: str | os.PathLike, jobs: int = 1, progress: bool = False) -> dict:
    """``hubertkit cut TSV_DIR SPLIT --dest DIR``: each utterance of the split as
    ``DIR/<name>`` (a span as FLAC of its samples, a member or whole file as its bytes)
    and ``DIR/{split}.tsv`` listing them as fairseq does (``path<TAB>num_samples``).
    Each file appears whole (temp + rename), the manifest last; a re-run keeps the files
    already written. Returns utterances, files written and bytes."""
    if jobs < 1:
        raise HubertkitError(f"--jobs must be at least 1, got {jobs}")
    manifest = read_manifest(manifest_path(tsv_dir, split))
    dest = output_folder(dest, manifest, tsv_dir)
    where = str(manifest.path)
    _check_names(manifest, where)  # before anything is written: no file may overwrite another

    def write(utt: Utterance) -> tuple[str, int]:
        name = standalone_name(utt)
        if (dest / name).is_file():  # written whole by an earlier run
            return name, -1
        data = standalone_bytes(utt, where)
        with atomic_open(dest / name, "wb") as f:
            f.write(data)
        return name, len(data)

    written, total = 0, 0
    out = manifest_path(dest, split)
    with atomic_lines(out) as write_line:  # line by line, not held in memory; it appears after the last file
        write_line(f"{dest}\n")
        done = ordered_map(write, manifest.utterances, jobs)
        for utt, (name, size) in zip(manifest.utterances, progress_bar(done, total=len(manifest), unit="utt",
                                                                       desc=f"cut {split}", disable=not progress)):
            write_line(f"{name}\t{utt.num_samples}\n")
            if size >= 0:
                written, total = written + 1, total + size
    return {"utterances": len(manifest), "written": written, "bytes": total, "manifest": str(out)}


def _check_names(manifest: Manifest, where: str) -> None:
    """Every name lands inside ``--dest``, and no two utterances are cut to one file (a
    span's file is its key: recordings that differ only in their extension would meet).
    Names are compared by an 8-byte hash each (then as text where two hashes meet), not
    kept in a dict of strings (some 150 bytes a name: gigabytes for Libri-Light's 12 M spans)."""
    hashes = np.empty(len(manifest), dtype=np.uint64)
    for i, utt in enumerate(manifest.utterances):
        _check_name(utt, where)
        hashes[i] = int.from_bytes(hashlib.blake2b(_stem(utt).encode(), digest_size=8).digest(), "little")
    order = np.argsort(hashes, kind="stable")
    twice = []
    for k in np.flatnonzero(hashes[order][1:] == hashes[order][:-1]):
        first, again = manifest.utterance(int(order[k])), manifest.utterance(int(order[k + 1]))
        if _stem(first) == _stem(again):
            twice.append((again.line, first.line, again.name, first.name))
    if twice:
        line, earlier, name, earlier_name = min(twice)
        why = (f"is also line {earlier}'s; a manifest to cut lists each utterance once" if name == earlier_name else
               f"would be cut to the same file as line {earlier}'s {earlier_name} (recordings whose names differ "
               "only in their extension); rename one")
        raise HubertkitError(f"{where}:{line}: {name} {why}")


def _stem(utt: Utterance) -> str:
    """What names the utterance's file in ``--dest``: a span's key (its extension follows
    from its sample type), else its name."""
    return utt.key if utt.start is not None else utt.name


def _check_name(utt: Utterance, where: str) -> None:
    """Refuse a name that would land outside ``--dest``: absolute, or with ``..`` (a
    member of an archive from elsewhere, a manifest path that climbs out of its root)."""
    path = PurePosixPath(utt.name)
    if path.is_absolute() or ".." in path.parts:
        raise HubertkitError(f"{where}:{utt.line}: {utt.name!r} would be written outside --dest "
                             "(an absolute name, or one with '..')")
