"""The label store: every label of a ``.km`` file in one memory-mapped array of the
smallest integer type that holds them, and one offset per utterance.

The text ``.km`` stays the interchange file (fairseq reads it; hubertkit writes it). The
store is built from it once, read by memory mapping, so no process parses labels or
holds them as Python objects, and the processes of a node share one copy in the page
cache. It records the size, inode, modification and status-change times of the ``.km``
it was built from and is rebuilt when any of them changes: the change time is set by
the kernel on every write, so an edit that keeps the size and restores the mtime
(``touch -r``, ``cp -p``) is noticed too. A store whose files are damaged is rebuilt.
It lives beside the ``.km`` (``train.km.values.npy``, ``train.km.offsets.npy``,
``train.km.store.json``), or in ``$HUBERTKIT_CACHE`` (default ``~/.cache/hubertkit``)
when that folder is read-only.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from pathlib import Path

import numpy as np

from hubertkit.data.shards import HEADER_ROWS_PLACEHOLDER, npy_header
from hubertkit.errors import HubertkitError
from hubertkit.fileio import AtomicFile, FileLock, atomic_open, disk_error, write_text
from hubertkit.parallel import ordered_map
from hubertkit.progress import progress_bar

STORE_VERSION = 1
BLOCK_BYTES = 1 << 24  # text parsed at a time: bounds the build's memory (about 20x this)
_WIDTHS = [np.dtype("<u1"), np.dtype("<u2"), np.dtype("<u4"), np.dtype("<i8")]
_HIST_LIMIT = 1 << 20  # ids below this are counted with a histogram, larger ones by sorting


def _narrowest(largest: int) -> np.dtype:
    return next(t for t in _WIDTHS if largest <= np.iinfo(t).max)


def store_base(label_path: str | os.PathLike) -> Path:
    """Where the store of ``label_path`` lives, as a path its files extend."""
    path = Path(label_path)
    if os.access(path.parent, os.W_OK):
        return path
    cache = Path(os.environ.get("HUBERTKIT_CACHE") or Path.home() / ".cache" / "hubertkit")  # '' is unset
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    return cache / "labels" / key / path.name


def _fingerprint(path: Path) -> dict:
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino}


class DamagedStore(HubertkitError):
    """The store's files do not hold what its description says (truncated, garbled)."""


class LabelStore:
    """Utterance ``i``'s labels are ``store[i]`` (a view of the memory map)."""

    def __init__(self, source: Path, base: Path, meta: dict):
        self.source, self.base = source, base
        try:
            self.offsets = np.load(f"{base}.offsets.npy", allow_pickle=False)
            dtype = np.dtype(meta["dtype"])
            self.values = (np.load(f"{base}.values.npy", mmap_mode="r", allow_pickle=False) if meta["labels"]
                           else np.zeros(0, dtype))  # an empty array cannot be memory-mapped
            self.ids = np.asarray(meta["ids"], dtype=np.int64)  # every distinct label, ascending
            self.counts = np.asarray(meta["counts"], dtype=np.int64)  # and how often it occurs
            consistent = (self.offsets.ndim == self.values.ndim == 1 and self.offsets.dtype == np.int64
                          and self.values.dtype == dtype and len(self.offsets) == meta["utterances"] + 1
                          and self.offsets[0] == 0 and self.offsets[-1] == len(self.values) == meta["labels"]
                          and bool(np.all(np.diff(self.offsets) >= 0)))
        except (OSError, ValueError, TypeError, KeyError, EOFError):  # truncated, garbled, pickled
            consistent = False
        if not consistent:
            raise DamagedStore(f"the label store {base}.* of {source} is inconsistent: delete its files and run again")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __reduce__(self):  # a worker process maps the files again instead of receiving a copy
        return open_store, (self.source,)


def _read_meta(source: Path, base: Path) -> dict | None:
    """The store's description if it exists and was built from ``source`` as it is now."""
    try:
        meta = json.loads(Path(f"{base}.store.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    fresh = meta.get("version") == STORE_VERSION and meta.get("source") == _fingerprint(source)
    return meta if fresh and all(Path(f"{base}.{p}.npy").is_file() for p in ("values", "offsets")) else None


def open_store(label_path: str | os.PathLike, progress: bool = False) -> LabelStore:
    """The store of ``label_path``, built first if missing or stale (one process builds,
    the others wait for it)."""
    source = Path(label_path)
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        # a build's worker re-running an unguarded script: it would wait for the lock its parent holds
        raise HubertkitError("hubertkit was called at the top level of a script that a worker process imports; put "
                             "the call under `if __name__ == \"__main__\":`")
    if not source.is_file():
        raise HubertkitError(f"label file {source} does not exist")
    base = store_base(source)
    store = _intact_store(source, base)
    if store is not None:
        return store
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise disk_error(base.parent, e) from None
    with FileLock(base.parent / f".{base.name}.store.lock"):  # another process may have built it meanwhile
        return _intact_store(source, base) or LabelStore(source, base, _build(source, base, progress))


def _intact_store(source: Path, base: Path) -> LabelStore | None:
    """The store if it was built from ``source`` as it is now and its files are whole;
    None when it must be built (again)."""
    meta = _read_meta(source, base)
    try:
        return LabelStore(source, base, meta) if meta is not None else None
    except DamagedStore:
        return None


class _Counter:
    """Occurrences of each label id, summed over blocks."""

    def __init__(self):
        self.counts: dict[int, int] = {}

    def add(self, ids: np.ndarray, counts: np.ndarray) -> None:
        for i, c in zip(ids.tolist(), counts.tolist()):
            self.counts[i] = self.counts.get(i, 0) + c

    def result(self) -> tuple[list[int], list[int]]:
        ids = sorted(self.counts)
        return ids, [self.counts[i] for i in ids]


class _ValuesWriter:
    """The values ``.npy``, written as it grows; widened (rewritten) in the rare case a
    later block holds a label too large for the type chosen so far."""

    def __init__(self, path: Path):
        self.path, self.dtype, self.count = path, _WIDTHS[0], 0
        self.header = len(npy_header((HEADER_ROWS_PLACEHOLDER,), "<i8"))
        self.file, self.out = self._open()

    def _open(self):
        f = AtomicFile(self.path)
        out = open(f.tmp, "wb")
        out.write(b"\0" * self.header)
        return f, out

    def append(self, values: np.ndarray) -> None:
        if len(values) and _narrowest(int(values.max())).itemsize > self.dtype.itemsize:
            self._widen(_narrowest(int(values.max())))
        self.out.write(values.astype(self.dtype).tobytes())
        self.count += len(values)

    def _widen(self, dtype: np.dtype) -> None:
        old, old_dtype = self.file, self.dtype
        self.out.close()
        self.file, self.out = self._open()
        self.dtype = dtype
        step = BLOCK_BYTES // old_dtype.itemsize
        for start in range(0, self.count, step):
            block = np.fromfile(old.tmp, old_dtype, min(step, self.count - start), offset=self.header + start * old_dtype.itemsize)
            self.out.write(block.astype(dtype).tobytes())
        old.discard()

    def commit(self) -> None:
        self.out.seek(0)
        self.out.write(npy_header((self.count,), self.dtype.str, self.header))
        self.out.close()
        self.file.commit()

    def discard(self) -> None:
        self.out.close()
        self.file.discard()


def _block_ranges(path: Path) -> list[tuple[int, int]]:
    """Byte ranges of about ``BLOCK_BYTES`` that end at a line end (or the file's end)."""
    size, ranges, start = os.path.getsize(path), [], 0
    with open(path, "rb") as f:
        while start < size:
            f.seek(min(start + BLOCK_BYTES, size) - 1)
            while (data := f.read(1 << 16)) and b"\n" not in data:
                pass
            stop = size if not data else f.tell() - len(data) + data.index(b"\n") + 1
            ranges.append((start, stop))
            start = stop
    return ranges


class _BadLine(Exception):
    """Line ``args[0]`` (0-based, in its block) is not labels: ``args[1]`` is its text."""


def parse_block(text: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Labels and the number of labels per line of ``text`` (whole lines), vectorised;
    anything that is not a non-negative integer raises ``_BadLine``."""
    b = np.frombuffer(text, dtype=np.uint8)
    token = b > 32  # ASCII whitespace and control characters separate labels, as str.split
    starts = token.copy()
    starts[1:] &= ~token[:-1]
    first = np.flatnonzero(starts)
    try:  # numpy's C parser; what it cannot read, it refuses, and the counts below catch the rest
        values = np.fromstring(text, dtype=np.int64, sep=" ") if len(first) else np.zeros(0, np.int64)
    except ValueError:
        values = None
    if values is None or len(values) != len(first) or (len(values) and not 0 <= values.min() <= values.max() < 2**63 - 1):
        lines = text.split(b"\n")  # the slow path, only to name the line
        number = next(i for i, line in enumerate(lines) if not all(t.isdigit() and len(t) < 19 for t in line.split()))
        raise _BadLine(number, lines[number].decode(errors="replace"))
    per_line = np.diff(np.searchsorted(first, np.flatnonzero(b == 10)), prepend=0)
    return values, per_line


def _parse_range(task: tuple[Path, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One block of the file, parsed (in a worker process): its labels in the narrowest
    type, labels per line, and each distinct label with its count."""
    path, start, stop = task
    with open(path, "rb") as f:
        f.seek(start)
        text = f.read(stop - start)
    if not text.endswith(b"\n"):  # the last line of a file without a final newline
        text += b"\n"
    values, per_line = parse_block(text)
    largest = int(values.max()) if len(values) else 0
    if largest < _HIST_LIMIT:
        hist = np.bincount(values)
        ids = np.flatnonzero(hist)
        counts = hist[ids]
    else:
        ids, counts = np.unique(values, return_counts=True)
    return values.astype(_narrowest(largest)), per_line, ids, counts


def _build(source: Path, base: Path, progress: bool) -> dict:
    fingerprint = _fingerprint(source)
    ranges = _block_ranges(source)
    jobs = min(len(ranges), len(os.sched_getaffinity(0)), 8)
    writer = _ValuesWriter(Path(f"{base}.values.npy"))
    counter, per_line, lines = _Counter(), [], 0
    bar = progress_bar(total=fingerprint["size"], unit="B", unit_scale=True, desc=f"label store {source.name}",
                       disable=not progress or len(ranges) < 4)
    try:
        parsed = ordered_map(_parse_range, [(source, a, b) for a, b in ranges], jobs, processes=True)
        for (start, stop), (values, counts, ids, id_counts) in zip(ranges, parsed):
            writer.append(values)
            counter.add(ids, id_counts)
            per_line.append(counts)
            lines += len(counts)
            bar.update(stop - start)
        offsets = np.concatenate([[0], np.cumsum(np.concatenate([np.zeros(0, np.int64), *per_line]))]).astype(np.int64)
        with atomic_open(f"{base}.offsets.npy", "wb") as f:
            np.save(f, offsets)
        writer.commit()
    except _BadLine as e:
        writer.discard()
        line = lines + e.args[0] + 1  # the lines of the blocks before it, then its own
        raise HubertkitError(f"{source}:{line}: labels must be non-negative integers below 2**63, "
                             f"got {e.args[1][:60]!r}") from None
    except OSError as e:
        writer.discard()
        raise disk_error(f"{base}.values.npy", e) from None
    except BaseException:
        writer.discard()
        raise
    finally:
        bar.close()
    if _fingerprint(source) != fingerprint:
        raise HubertkitError(f"{source} changed while its label store was being built: run again")
    ids, counts = counter.result()
    meta = {"version": STORE_VERSION, "source": fingerprint, "utterances": len(offsets) - 1, "labels": writer.count,
            "dtype": writer.dtype.str, "ids": ids, "counts": counts}
    try:  # the description last: without it the arrays are not a store, so they go too
        write_text(f"{base}.store.json", json.dumps(meta) + "\n")
    except BaseException:
        for part in ("values", "offsets"):
            Path(f"{base}.{part}.npy").unlink(missing_ok=True)
        raise
    return meta
