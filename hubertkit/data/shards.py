"""Feature shards as fairseq writes them: ``{split}_{rank}_{nshard}.npy`` holds every
frame of the shard's utterances, ``.len`` one frame count per utterance.

The ``.npy`` is streamed to disk (its header is rewritten once the frame count is
known) so a shard never has to fit in memory, and both files appear atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hubertkit.errors import HubertkitError
from hubertkit.fileio import AtomicFile, disk_error, write_text

# Room for any row count up to 10**15 in a header, so it can be rewritten in place.
HEADER_ROWS_PLACEHOLDER = 10**15


def shard_path(feat_dir: str | os.PathLike, split: str, rank: int, nshard: int, ext: str) -> Path:
    """``FEAT_DIR/{split}_{rank}_{nshard}.{ext}``; split names may contain dots (``dev.clean``)."""
    return Path(feat_dir) / f"{split}_{rank}_{nshard}.{ext}"


def manifest_fingerprint(manifest) -> str:
    """Which manifest a dump came from: its utterances' paths and lengths, hashed."""
    text = "\n".join(f"{u.path}\t{u.num_samples}" for u in manifest.utterances)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def npy_header(shape: tuple[int, ...], descr: str = "<f4", size: int | None = None) -> bytes:
    """An ``.npy`` header (format 1.0) for C-order data; ``size`` pads it to a header
    written before, so that one written with placeholder rows can be replaced in place."""
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    text = repr(header).encode("latin1")
    # version 1.0: magic(6) + version(2) + uint16 header length, total a multiple of 64
    total = size if size is not None else -(-(10 + len(text) + 1) // 64) * 64
    text = text + b" " * (total - 10 - len(text) - 1) + b"\n"
    return b"\x93NUMPY\x01\x00" + np.uint16(len(text)).tobytes() + text


class ShardWriter:
    """Append ``[frames, dim]`` float32 arrays; ``close()`` publishes ``.npy`` and ``.len``."""

    def __init__(self, feat_dir: str | os.PathLike, split: str, rank: int, nshard: int, dim: int, source: str | None = None):
        self.dim, self.source = dim, source
        self._sidecar = shard_path(feat_dir, split, rank, nshard, "json")
        self._npy_file = AtomicFile(shard_path(feat_dir, split, rank, nshard, "npy"))
        self._len_file = AtomicFile(shard_path(feat_dir, split, rank, nshard, "len"))
        self.paths = [self._npy_file.path, self._len_file.path]
        self._npy = open(self._npy_file.tmp, "wb")
        self._len = open(self._len_file.tmp, "w")
        self._header_size = len(npy_header((HEADER_ROWS_PLACEHOLDER, dim)))
        self._npy.write(b"\0" * self._header_size)
        self.frames = 0
        self.utterances = 0

    def append(self, feats: np.ndarray) -> None:
        feats = np.ascontiguousarray(feats, dtype="<f4")
        if feats.ndim != 2 or feats.shape[1] != self.dim:
            raise ValueError(f"expected [frames, {self.dim}] features, got {feats.shape}")
        try:
            self._npy.write(feats.tobytes())
            self._len.write(f"{feats.shape[0]}\n")
        except OSError as e:
            raise disk_error(self._npy_file.path, e) from None
        self.frames += feats.shape[0]
        self.utterances += 1

    def close(self) -> None:
        try:
            self._npy.seek(0)
            self._npy.write(npy_header((self.frames, self.dim), size=self._header_size))
            self._npy.close()
            self._len.close()
            self._npy_file.commit()
            self._len_file.commit()
            if self.source:  # the manifest it came from, so that shards of two dumps are never mixed
                write_text(self._sidecar, json.dumps({"manifest": self.source, "dim": self.dim,
                                                      "utterances": self.utterances}) + "\n")
            else:
                self._sidecar.unlink(missing_ok=True)
        except BaseException as e:  # e.g. the disk filled up at the last write: no temp file stays behind
            self.abort()
            if isinstance(e, OSError):
                raise disk_error(self._npy_file.path, e) from None
            raise

    def abort(self) -> None:
        for f in (self._npy, self._len):
            with contextlib.suppress(OSError):  # flushing to a full disk fails again; the temps go anyway
                f.close()
        self._npy_file.discard()
        self._len_file.discard()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


@dataclass
class FeatureShard:
    """A memory-mapped shard: ``feats`` is never read whole into RAM."""

    feats: np.ndarray
    lengths: np.ndarray
    offsets: np.ndarray
    path: Path

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def dim(self) -> int:
        return self.feats.shape[1]

    def utterance(self, i: int) -> np.ndarray:
        return self.feats[self.offsets[i] : self.offsets[i] + self.lengths[i]]

    def __getstate__(self) -> dict:  # a worker process maps the file again instead of receiving a copy
        return {**self.__dict__, "feats": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.feats = np.load(self.path, mmap_mode="r")

    def read_rows(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``[start, stop)`` copied into memory with ``pread``.

        Unlike slicing the memory map, this leaves no file pages mapped into the
        process, so streaming over a feature set larger than RAM keeps RSS flat.
        """
        if out is None:
            out = np.empty((stop - start, self.dim), dtype="<f4")
        fd = os.open(self.path, os.O_RDONLY)
        try:
            got = os.preadv(fd, [out], self.feats.offset + start * self.dim * 4)
        finally:
            os.close(fd)
        if got != out.nbytes:
            raise HubertkitError(f"{self.path} is shorter than its header says (truncated file?)")
        self._check_finite(out, np.arange(start, stop))
        return out

    def take_rows(self, rows: np.ndarray) -> np.ndarray:
        """Scattered rows (e.g. a random sample), each read with ``pread``: faulting them
        in through the memory map would pull neighbouring pages into RSS as well."""
        out = np.empty((len(rows), self.dim), dtype="<f4")
        row_bytes = self.dim * 4
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for i, r in enumerate(rows.tolist()):
                if os.preadv(fd, [out[i]], self.feats.offset + r * row_bytes) != row_bytes:
                    raise HubertkitError(f"{self.path} is shorter than its header says (truncated file?)")
        finally:
            os.close(fd)
        self._check_finite(out, rows)
        return out

    def _check_finite(self, block: np.ndarray, rows: np.ndarray) -> None:
        """NaN or inf would win or lose every distance silently (label 0, a broken k-means)."""
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            row = int(rows[np.argmin(finite)])
            utt = int(np.searchsorted(self.offsets, row, side="right") - 1)
            raise HubertkitError(f"{self.path}: utterance {utt} (line {utt + 1} of its .len) has NaN or infinite "
                                 "features; re-run the dump (dump-mfcc refuses audio with such samples)")


def read_shard(feat_dir: str | os.PathLike, split: str, rank: int, nshard: int) -> FeatureShard:
    npy, lens = (shard_path(feat_dir, split, rank, nshard, ext) for ext in ("npy", "len"))
    for p in (npy, lens):
        if not p.is_file():
            raise HubertkitError(f"missing feature shard file {p} (did the dump for rank {rank} finish?)")
    try:
        feats = np.load(npy, mmap_mode="r")
    except (ValueError, EOFError, OSError) as e:
        raise HubertkitError(f"{npy} is not a valid .npy file (empty or truncated?): {e or type(e).__name__}") from None
    if feats.ndim != 2:
        raise HubertkitError(f"{npy} should hold [frames, dim] features, has shape {feats.shape}")
    if feats.dtype != np.dtype("<f4") or (np.isfortran(feats) and feats.shape[0] > 1):
        # np.load would read these, but every reader here (and fairseq's) streams rows of float32
        layout = f"{feats.dtype.str} ({feats.dtype.name}{', big-endian' if feats.dtype.byteorder == '>' else ''})"
        raise HubertkitError(
            f"{npy} holds {layout}{' in Fortran order' if np.isfortran(feats) else ''} features; shards are float32, "
            "little-endian, C order (as fairseq's dumps write them): re-save with "
            "np.save(path, np.ascontiguousarray(x, dtype='<f4'))"
        )
    try:
        lengths = np.loadtxt(lens, dtype=np.int64, ndmin=1)
    except (ValueError, OverflowError) as e:
        raise HubertkitError(f"{lens} should hold one integer per line: {e}") from None
    bad = np.flatnonzero((lengths < 0) | (lengths > feats.shape[0]))
    if len(bad):
        raise HubertkitError(f"{lens}:{bad[0] + 1}: frame count {lengths[bad[0]]} is impossible for a shard of "
                             f"{feats.shape[0]} frames; re-run the dump for this rank")
    if lengths.sum() != feats.shape[0]:
        raise HubertkitError(
            f"{lens} lists {int(lengths.sum())} frames but {npy} holds {feats.shape[0]}: "
            "the two files come from different dumps; re-run the dump for this rank"
        )
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return FeatureShard(feats, lengths, offsets, npy)


def read_shards(feat_dir: str | os.PathLike, split: str, nshard: int) -> list[FeatureShard]:
    shards = [read_shard(feat_dir, split, rank, nshard) for rank in range(nshard)]
    dims = {s.feats.shape[1] for s in shards}
    if len(dims) > 1:
        raise HubertkitError(f"shards of {split} in {feat_dir} have different dimensions {sorted(dims)}")
    check_one_manifest(feat_dir, split, nshard)
    return shards


def check_one_manifest(feat_dir: str | os.PathLike, split: str, nshard: int) -> None:
    """Refuse a folder whose shards of ``split`` (those there so far) were dumped from two
    different manifests: their utterances do not line up with either."""
    sources = {}
    for rank in range(nshard):
        side = shard_path(feat_dir, split, rank, nshard, "json")
        if side.is_file():
            try:
                sources[rank] = json.loads(side.read_text()).get("manifest")
            except (json.JSONDecodeError, AttributeError):
                raise HubertkitError(f"{side} is corrupt: re-run the dump for rank {rank}") from None
    if len(set(sources.values())) > 1:
        groups = {}
        for rank, src in sources.items():
            groups.setdefault(src, []).append(rank)
        raise HubertkitError(f"the shards of {split} in {feat_dir} come from {len(groups)} different manifests "
                             f"(ranks {' vs '.join(str(g) for g in groups.values())}): two dumps wrote into one folder; "
                             "re-run the dump of every rank from one manifest")


def find_nshard(feat_dir: str | os.PathLike, split: str) -> int:
    """The NSHARD of the dump of ``split`` in ``feat_dir`` (from rank 0's file name)."""
    found = sorted({int(p.stem.rsplit("_", 1)[1]) for p in Path(feat_dir).glob(f"{split}_0_*.npy")
                    if p.stem.rsplit("_", 1)[1].isdigit()})
    if len(found) != 1:
        what = "no" if not found else f"several dumps ({found}) of"
        raise HubertkitError(f"{feat_dir} holds {what} {split}_0_NSHARD.npy: dump it once (e.g. with dump-pitch)")
    return found[0]


class UtteranceShards:
    """Every utterance of a dump, in manifest order: ``shards[i]`` is a view of the
    memory-mapped shard that holds it; ``lengths`` every utterance's frame count."""

    def __init__(self, shards: list[FeatureShard]):
        self.shards = shards
        self.lengths = np.concatenate([s.lengths for s in shards])
        self.dim = shards[0].dim
        self._shard = np.repeat(np.arange(len(shards), dtype=np.int32), [len(s) for s in shards])
        self._first = np.cumsum([0] + [len(s) for s in shards])

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> np.ndarray:
        k = self._shard[i]
        return self.shards[k].utterance(i - self._first[k])

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def read_utterances(feat_dir: str | os.PathLike, split: str) -> UtteranceShards:
    return UtteranceShards(read_shards(feat_dir, split, find_nshard(feat_dir, split)))
