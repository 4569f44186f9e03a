"""fairseq's audio manifest (``{split}.tsv``): the root directory, then ``path<TAB>num_samples``.

hubertkit's extensions, a third field saying where the audio is (fairseq refuses a line
of three fields, so such a manifest is never misread as whole files):

- ``path<TAB>num_samples<TAB>start``: a span, the ``num_samples`` samples of ``path``
  from sample ``start`` on, read by seeking (long recordings need no file per
  utterance). It is named ``path@start``.
- ``name<TAB>num_samples<TAB>archive.tar:offset:size``: a member of an uncompressed tar
  archive (``hubertkit pack``), its bytes at ``offset``, read through a memory map. It is
  named by its member name, so alignments and transcripts keyed by the original files
  still find it.
"""

from __future__ import annotations

import logging
import os
import array
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import soundfile as sf

from hubertkit.data.archive import archive_members
from hubertkit.errors import HubertkitError
from hubertkit.fileio import atomic_open
from hubertkit.parallel import ordered_map
from hubertkit.progress import progress_bar

log = logging.getLogger(__name__)
MAX_SAMPLES = 16000 * 3600 * 24 * 366  # a sample count beyond this is a damaged manifest
MAX_BYTES = 1 << 50  # nor is a span start or an archive offset beyond this
LOCATION = re.compile(rb"\d+|[^\t]+:\d+:\d+")  # a span's start sample, or archive.tar:offset:size


@dataclass(frozen=True)
class Utterance:
    path: str  # absolute path of the audio file (of the archive, for a member)
    num_samples: int
    line: int  # 1-based line number in the manifest, for error messages
    start: int | None = None  # a span: its first sample in the file (None: the whole file)
    name: str = ""  # as the manifest lists it: the relative path, ``path@start`` for a span, a member's name
    member: tuple[int, int] | None = None  # an archive member: its bytes' offset and size in ``path``

    @property
    def key(self) -> str:
        """What alignments, transcripts and speaker maps name it by (``utterance_key``)."""
        return utterance_key(self.name)


def utterance_key(name: str) -> str:
    """A manifest entry's relative path without its audio extension: what manifests and
    alignments share; a span's ``path@start`` keeps its start (``spk/rec@16000``)."""
    path, at, start = name.rpartition("@")
    if at and start.isdigit():
        return os.path.splitext(path)[0] + at + start
    return os.path.splitext(name)[0]


class Manifest:
    """A manifest's utterances as arrays: sizes, line numbers and where each line starts
    in the memory-mapped file, whose paths (and spans and archive places) are read when
    asked for. An utterance costs 24 bytes of the process's own memory, so millions of
    them load in seconds, and the processes of a node share the text in the page cache."""

    def __init__(self, path: Path, root: str, starts: np.ndarray, path_lengths: np.ndarray, sizes: np.ndarray,
                 lines: np.ndarray, located: bool = False):
        self.path, self.root = path, root
        self.starts, self.path_lengths, self.sizes, self.lines = starts, path_lengths, sizes, lines
        self.located = located  # whether some line has hubertkit's third field (a span or an archive member)
        self._text = np.memmap(path, dtype=np.uint8, mode="r") if len(sizes) else None

    def __len__(self) -> int:
        return len(self.sizes)

    def relpath(self, i: int) -> str:
        """Utterance ``i``'s path as the manifest lists it (relative to the root)."""
        start = int(self.starts[i])
        return bytes(self._text[start : start + int(self.path_lengths[i])]).decode()

    def _location(self, i: int) -> bytes:
        """Line ``i``'s third field, empty when it has two."""
        first = int(self.starts[i]) + int(self.path_lengths[i]) + 1
        rest = bytes(self._text[first : first + 8192]).split(b"\n", 1)[0]  # sample count, location (a path at most)
        fields = rest.split(b"\t")
        return fields[1].strip() if len(fields) > 1 else b""

    def utterance(self, i: int) -> Utterance:
        rel, size, line = self.relpath(i), int(self.sizes[i]), int(self.lines[i])
        where = self._location(i).decode() if self.located else ""
        if not where:
            return Utterance(os.path.join(self.root, rel), size, line, name=rel)
        if where.isdigit():
            return Utterance(os.path.join(self.root, rel), size, line, int(where), f"{rel}@{where}")
        archive, offset, nbytes = where.rsplit(":", 2)
        return Utterance(os.path.join(self.root, archive), size, line, name=rel, member=(int(offset), int(nbytes)))

    @property
    def utterances(self) -> Sequence[Utterance]:
        return _Utterances(self)

    def shard(self, nshard: int, rank: int) -> list[Utterance]:
        if not len(self):
            raise HubertkitError(f"manifest {self.path} lists no utterances (only its root line): nothing to dump")
        start, end = shard_range(len(self), nshard, rank)
        return [self.utterance(i) for i in range(start, end)]

    def __reduce__(self):  # a worker process reads the file again instead of receiving a copy
        return read_manifest, (self.path,)


class _Utterances(Sequence):
    """A manifest's utterances, made when asked for."""

    def __init__(self, manifest: Manifest):
        self.manifest = manifest

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.manifest.utterance(j) for j in range(len(self))[i]]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return self.manifest.utterance(i % len(self))


def shard_range(total: int, nshard: int, rank: int) -> tuple[int, int]:
    """fairseq's split of ``total`` items into ``nshard`` contiguous shards (same rounding)."""
    if not 0 <= rank < nshard:
        raise HubertkitError(f"rank {rank} is outside 0..{nshard - 1} for nshard={nshard}")
    start = round(total / nshard * rank)
    end = round(total / nshard * (rank + 1))
    if start >= end:
        raise HubertkitError(f"shard {rank}/{nshard} of {total} utterances is empty; use fewer shards")
    return start, end


def manifest_path(tsv_dir: str | os.PathLike, split: str) -> Path:
    return Path(tsv_dir) / f"{split}.tsv"


def read_manifest(path: str | os.PathLike) -> Manifest:
    path = Path(path)
    if path.is_dir():
        listed = sorted(p.name for p in path.glob("*.tsv"))
        raise HubertkitError(f"manifest {path} is a folder: give a manifest file in it"
                             + (f" ({', '.join(listed[:4])})" if listed else ""))
    if not path.is_file():
        raise HubertkitError(f"manifest {path} does not exist")
    starts, path_lengths, sizes, lines = (array.array(t) for t in "qiqi")
    located = False
    with open(path, "rb") as f:
        first = f.readline()
        root = _decode(first, path, 1).strip()
        if not first:
            raise HubertkitError(f"manifest {path} is empty: its first line must be the audio root directory")
        if root.startswith("\ufeff"):  # an editor's byte-order mark; fairseq would read it as part of the root
            raise HubertkitError(f"{path}:1: the root directory starts with a byte-order mark (U+FEFF), which fairseq "
                                 "reads as part of the path: save the manifest as UTF-8 without BOM")
        position = len(first)
        for number, line in enumerate(f, start=2):
            tab = line.find(b"\t")
            fields = [line[tab + 1 :]] if line.count(b"\t") == 1 else line[tab + 1 :].split(b"\t")  # fast path: fairseq's
            if tab < 0 or len(fields) > 2 or not fields[0].strip().isdigit() or (
                    len(fields) == 2 and not LOCATION.fullmatch(fields[1].strip())):
                if line.strip():
                    raise HubertkitError(f"{path}:{number}: expected 'relative/path<TAB>num_samples' (or, for a span "
                                         "of a recording, 'relative/path<TAB>num_samples<TAB>start', for an archive "
                                         "member 'name<TAB>num_samples<TAB>archive.tar:offset:size'), "
                                         f"got {_decode(line, path, number).rstrip(chr(10))!r}")
            else:
                if not line.isascii():
                    _decode(line, path, number)
                size = int(fields[0])
                if len(fields) == 2:
                    located = True
                    numbers = [int(x) for x in fields[1].strip().split(b":")[-2:]]
                    if max(numbers) > MAX_BYTES:
                        raise HubertkitError(f"{path}:{number}: {fields[1].strip().decode(errors='replace')} is beyond "
                                             "any recording or archive")
                if size > MAX_SAMPLES:
                    raise HubertkitError(f"{path}:{number}: {size} samples is not a length of audio (at most "
                                         f"{MAX_SAMPLES}, a year at 16 kHz)")
                starts.append(position)
                path_lengths.append(tab)
                sizes.append(size)
                lines.append(number)
            position += len(line)
    arrays = [np.frombuffer(a, dtype=a.typecode) if len(a) else np.zeros(0, a.typecode)
              for a in (starts, path_lengths, sizes, lines)]
    return Manifest(path, root, *arrays, located)


def _decode(line: bytes, path: Path, number: int) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        raise HubertkitError(f"{path}:{number}: not UTF-8 text (fairseq's manifests are); rewrite it as UTF-8") from None


def make_manifest(
    audio_dir: str | os.PathLike,
    dest: str | os.PathLike,
    ext: str = "flac",
    valid_percent: float = 0.01,
    seed: int = 42,
    path_must_contain: str | None = None,
    jobs: int = 8,
    progress: bool = False,
    archives: bool = False,
) -> dict[str, int]:
    """Write ``train.tsv`` (and ``valid.tsv`` when ``valid_percent > 0``) as fairseq's
    ``wav2vec_manifest.py`` does: one ``random()`` draw per file decides its split.

    Files are visited in sorted order (fairseq uses directory order, which differs
    between machines), so the split is reproducible. Files a dump would refuse
    (unreadable, truncated, empty, not 16 kHz) are named and left out. Headers are read
    on ``jobs`` threads: a million files on a network file system take minutes, not
    hours. ``archives``: also list the members of the uncompressed tar archives
    (``*.tar``) under ``audio_dir`` whose names end in ``.ext``, read in place, without
    unpacking (WebDataset-style shards). Returns the number of utterances per split.
    """
    root = Path(os.path.realpath(audio_dir))
    if not root.is_dir():
        raise HubertkitError(f"audio directory {audio_dir} does not exist")
    if not 0 <= valid_percent <= 1:
        raise HubertkitError(f"--valid-percent must be in [0, 1], got {valid_percent}")
    ext = ext.lstrip(".")
    files = sorted(p for p in root.rglob(f"*.{ext}") if p.is_file())
    tars = sorted(p for p in root.rglob("*.tar") if p.is_file()) if archives else []
    if path_must_contain:
        files = [p for p in files if path_must_contain in str(p)]
    if not files and not tars:
        raise HubertkitError(f"no *.{ext} files under {root}" + (" and no *.tar archives" if archives else ""))
    rand = random.Random(seed)
    splits: dict[str, list[str]] = {"train": [], "valid": []}
    left_out: dict[str, list[Path]] = {}
    inspected = progress_bar(ordered_map(_inspect, files, jobs), total=len(files), unit="file", desc="manifest",
                             disable=not progress)
    for path, (frames, problem) in zip(files, inspected):
        if problem:
            left_out.setdefault(problem.split(":")[0], []).append(path)
            log.warning("leaving out %s: %s", path, problem)
            continue
        split = "train" if rand.random() > valid_percent else "valid"
        splits[split].append(f"{os.path.relpath(os.path.realpath(path), root)}\t{frames}")
    for tar in progress_bar(tars, unit="tar", desc="manifest: archives", disable=not progress or not tars):
        rel = os.path.relpath(os.path.realpath(tar), root)
        for name, frames, rate, offset, size in archive_members(tar, ext):
            if (path_must_contain and path_must_contain not in name) or "\t" in name or "\n" in name:
                continue
            if rate != 16000 or frames == 0:
                left_out.setdefault("not 16 kHz" if rate != 16000 else "empty", []).append(Path(f"{tar}:{name}"))
                log.warning("leaving out %s of %s: %s", name, tar, f"{rate} Hz" if rate != 16000 else "no samples")
                continue
            split = "train" if rand.random() > valid_percent else "valid"
            splits[split].append(f"{name}\t{frames}\t{rel}:{offset}:{size}")
    if left_out:
        log.warning("left out %d of %d file(s): %s", sum(map(len, left_out.values())), len(files),
                    ", ".join(f"{len(v)} {k}" for k, v in left_out.items()))
    return {split: write_manifest(manifest_path(dest, split), root, rows) for split, rows in splits.items()
            if split == "train" or valid_percent > 0}


def write_manifest(path: str | os.PathLike, root: str | os.PathLike, lines: list[str]) -> int:
    """A manifest, written atomically: the root, then a line per utterance; returns how many."""
    with atomic_open(path) as f:
        f.write("\n".join([str(root), *lines]) + "\n")
    return len(lines)


def _inspect(path: Path) -> tuple[int, str | None]:
    """Frames of an audio file, and why it cannot be used (unreadable, not 16 kHz, empty,
    truncated: its last sample cannot be read), found now rather than at the first dump."""
    try:
        with sf.SoundFile(str(path)) as f:
            frames, rate = f.frames, f.samplerate
            if rate != 16000:
                return frames, f"not 16 kHz: {rate} Hz (resample it)"
            if frames == 0:
                return frames, "empty: no samples"
            f.seek(frames - 1)
            if len(f.read(1)) != 1:
                raise RuntimeError("its last sample cannot be read")
    except (sf.LibsndfileError, RuntimeError) as e:
        return 0, f"unreadable or truncated: {e}"
    return frames, None


def lookup_by_path(table: dict, path: str, what: str, where: str):
    """``table``'s entry for a manifest path, keyed by the path itself, the path without
    its extension, or the file's stem (the conventions of speaker maps and transcripts)."""
    p = PurePosixPath(path)
    for key in (path, str(p.with_suffix("")), p.stem):
        if key in table:
            return table[key]
    raise HubertkitError(f"{where}: no {what} for {path}")
