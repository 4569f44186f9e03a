"""fairseq's audio manifest (``{split}.tsv``): the root directory, then ``path<TAB>num_samples``."""

from __future__ import annotations

import logging
import os
import array
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import soundfile as sf

from hubertkit.errors import HubertkitError
from hubertkit.fileio import atomic_open
from hubertkit.parallel import ordered_map
from hubertkit.progress import progress_bar

log = logging.getLogger(__name__)
MAX_SAMPLES = 16000 * 3600 * 24 * 366  # a sample count beyond this is a damaged manifest


@dataclass(frozen=True)
class Utterance:
    path: str  # absolute path of the audio file
    num_samples: int
    line: int  # 1-based line number in the manifest, for error messages


class Manifest:
    """A manifest's utterances as arrays: sizes, line numbers and where each line starts
    in the memory-mapped file, whose paths are read when asked for. An utterance costs
    24 bytes of the process's own memory, so millions of them load in seconds, and the
    processes of a node share the text in the page cache."""

    def __init__(self, path: Path, root: str, starts: np.ndarray, path_lengths: np.ndarray, sizes: np.ndarray,
                 lines: np.ndarray):
        self.path, self.root = path, root
        self.starts, self.path_lengths, self.sizes, self.lines = starts, path_lengths, sizes, lines
        self._text = np.memmap(path, dtype=np.uint8, mode="r") if len(sizes) else None

    def __len__(self) -> int:
        return len(self.sizes)

    def relpath(self, i: int) -> str:
        """Utterance ``i``'s path as the manifest lists it (relative to the root)."""
        start = int(self.starts[i])
        return bytes(self._text[start : start + int(self.path_lengths[i])]).decode()

    def utterance(self, i: int) -> Utterance:
        return Utterance(os.path.join(self.root, self.relpath(i)), int(self.sizes[i]), int(self.lines[i]))

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
            if tab < 0 or line.count(b"\t") > 1 or not line[tab + 1 :].strip().isdigit():
                if line.strip():
                    raise HubertkitError(f"{path}:{number}: expected 'relative/path<TAB>num_samples', "
                                         f"got {_decode(line, path, number).rstrip(chr(10))!r}")
            else:
                if not line.isascii():
                    _decode(line, path, number)
                size = int(line[tab + 1 :])
                if size > MAX_SAMPLES:
                    raise HubertkitError(f"{path}:{number}: {size} samples is not a length of audio (at most "
                                         f"{MAX_SAMPLES}, a year at 16 kHz)")
                starts.append(position)
                path_lengths.append(tab)
                sizes.append(size)
                lines.append(number)
            position += len(line)
    return Manifest(path, root, *(np.frombuffer(a, dtype=a.typecode) if len(a) else np.zeros(0, a.typecode)
                                  for a in (starts, path_lengths, sizes, lines)))


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
) -> dict[str, int]:
    """Write ``train.tsv`` (and ``valid.tsv`` when ``valid_percent > 0``) as fairseq's
    ``wav2vec_manifest.py`` does: one ``random()`` draw per file decides its split.

    Files are visited in sorted order (fairseq uses directory order, which differs
    between machines), so the split is reproducible. Files a dump would refuse
    (unreadable, truncated, empty, not 16 kHz) are named and left out. Headers are read
    on ``jobs`` threads: a million files on a network file system take minutes, not
    hours. Returns the number of utterances per split.
    """
    root = Path(os.path.realpath(audio_dir))
    if not root.is_dir():
        raise HubertkitError(f"audio directory {audio_dir} does not exist")
    if not 0 <= valid_percent <= 1:
        raise HubertkitError(f"--valid-percent must be in [0, 1], got {valid_percent}")
    ext = ext.lstrip(".")
    files = sorted(p for p in root.rglob(f"*.{ext}") if p.is_file())
    if path_must_contain:
        files = [p for p in files if path_must_contain in str(p)]
    if not files:
        raise HubertkitError(f"no *.{ext} files under {root}")
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
    if left_out:
        log.warning("left out %d of %d file(s): %s", sum(map(len, left_out.values())), len(files),
                    ", ".join(f"{len(v)} {k}" for k, v in left_out.items()))
    counts = {}
    for split, rows in splits.items():
        if split == "valid" and valid_percent <= 0:
            continue
        with atomic_open(Path(dest) / f"{split}.tsv") as f:
            f.write("\n".join([str(root), *rows]) + "\n")
        counts[split] = len(rows)
    return counts


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
