"""``hubertkit cut``: a split's spans or archive members written out as files of their
own, with a plain fairseq manifest: what fairseq (or any tool that reads one file per
utterance) needs from a corpus that hubertkit reads in place."""

from __future__ import annotations

import os
from pathlib import PurePosixPath

from hubertkit.data.audio import standalone_bytes, standalone_name
from hubertkit.data.manifest import Utterance, manifest_path, read_manifest, write_manifest
from hubertkit.data.pack import output_folder
from hubertkit.errors import HubertkitError
from hubertkit.fileio import atomic_open
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
    seen: dict[str, int] = {}
    for utt in manifest.utterances:  # before anything is written: no file may overwrite another
        _check_name(utt, where)
        if utt.name in seen:
            raise HubertkitError(f"{where}:{utt.line}: {utt.name} is also line {seen[utt.name]}'s; "
                                 "a manifest to cut lists each utterance once")
        seen[utt.name] = utt.line

    def write(utt: Utterance) -> tuple[str, int]:
        name = standalone_name(utt)
        if (dest / name).is_file():  # written whole by an earlier run
            return name, -1
        data = standalone_bytes(utt, where)
        with atomic_open(dest / name, "wb") as f:
            f.write(data)
        return name, len(data)

    lines, written, total = [], 0, 0
    done = ordered_map(write, manifest.utterances, jobs)
    for utt, (name, size) in zip(manifest.utterances, progress_bar(done, total=len(manifest), unit="utt",
                                                                   desc=f"cut {split}", disable=not progress)):
        lines.append(f"{name}\t{utt.num_samples}")
        if size >= 0:
            written, total = written + 1, total + size
    out = manifest_path(dest, split)
    return {"utterances": write_manifest(out, dest, lines), "written": written, "bytes": total, "manifest": str(out)}


def _check_name(utt: Utterance, where: str) -> None:
    """Refuse a name that would land outside ``--dest``: absolute, or with ``..`` (a
    member of an archive from elsewhere, a manifest path that climbs out of its root)."""
    path = PurePosixPath(utt.name)
    if path.is_absolute() or ".." in path.parts:
        raise HubertkitError(f"{where}:{utt.line}: {utt.name!r} would be written outside --dest "
                             "(an absolute name, or one with '..')")
