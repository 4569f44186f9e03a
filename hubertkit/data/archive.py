"""Reading corpora packed in uncompressed tar archives (``hubertkit pack``, or existing
WebDataset-style shards listed by ``hubertkit manifest --archives``): a few thousand
large files instead of millions of small ones, each utterance read by byte offset
through a memory map that a process opens once per archive (DataLoader workers map
again, by path), as SpidR / minimal_hubert do.

A packed manifest is an ordinary manifest whose lines end in ``archive.tar:offset:size``
(``manifest.py``); the member's own tar header, just before its bytes, is checked on
every read, so an archive rewritten since its manifest is refused, never read at the
wrong place.
"""

from __future__ import annotations

import io
import mmap
import os
import tarfile

import numpy as np
import soundfile as sf

from hubertkit.errors import HubertkitError
_MAPS: dict[str, tuple[tuple, mmap.mmap]] = {}  # archive -> (which file, in which process; its memory map)


def _mapped(path: str) -> mmap.mmap:
    """The archive's memory map, made once per process and file: a forked worker maps
    again, and so does a reader of an archive replaced or truncated since it was mapped
    (reading a truncated map past its new end would kill the process)."""
    st = os.stat(path)
    stamp = (os.getpid(), st.st_ino, st.st_size, st.st_mtime_ns)
    if path not in _MAPS or _MAPS[path][0] != stamp:
        with open(path, "rb") as f:
            _MAPS[path] = (stamp, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    return _MAPS[path][1]


def member_bytes(path: str, offset: int, size: int, where: str = "") -> memoryview:
    """The bytes of an archive member, after checking that its tar header is where the
    manifest says (the archive is complete, and unchanged since)."""
    try:
        data = _mapped(path)
    except FileNotFoundError:
        raise HubertkitError(f"{where}archive {path} does not exist") from None
    except (OSError, ValueError) as e:  # ValueError: an empty file cannot be mapped
        raise HubertkitError(f"{where}cannot map archive {path}: {e}") from None
    if offset < 512 or offset + size > len(data):
        raise HubertkitError(f"{where}archive {path} ({len(data)} bytes) has no member of {size} bytes at offset "
                             f"{offset}: the archive is truncated, or the manifest is another archive's")
    try:
        header = tarfile.TarInfo.frombuf(bytes(data[offset - 512 : offset]), "utf-8", "surrogateescape")
        intact = header.isreg() and header.size == size
    except tarfile.HeaderError:
        intact = False
    if not intact:
        raise HubertkitError(f"{where}archive {path} has changed since its manifest was written: no member of "
                             f"{size} bytes at offset {offset} (pack it again, or use the manifest written with it)")
    return memoryview(data)[offset : offset + size]


def read_member(path: str, offset: int, size: int, name: str, where: str = "") -> tuple[np.ndarray, int]:
    """An archive member decoded (FLAC, WAV, any format soundfile reads): samples × channels."""
    try:
        return sf.read(io.BytesIO(member_bytes(path, offset, size, where)), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise HubertkitError(f"{where}member {name} of {path} (offset {offset}) is not audio "
                             f"soundfile reads: {e}") from None


def archive_members(path: str | os.PathLike, ext: str) -> list[tuple[str, int, int, int, int]]:
    """The audio members (names ending in ``.ext``) of an uncompressed tar archive, read
    from its headers without unpacking: ``(name, frames, sample rate, offset, size)`` each."""
    try:
        with tarfile.open(path, "r:") as tar:
            found = [(m.name, m.offset_data, m.size) for m in tar if m.isreg() and m.name.endswith(f".{ext}")]
    except (tarfile.TarError, OSError) as e:
        raise HubertkitError(f"{path} cannot be listed as an uncompressed tar archive: {e}") from None
    data = _mapped(str(path)) if found else None
    out = []
    for name, offset, size in found:
        try:
            info = sf.info(io.BytesIO(memoryview(data)[offset : offset + size]))
        except (sf.LibsndfileError, RuntimeError) as e:
            raise HubertkitError(f"member {name} of {path} (offset {offset}) is not audio soundfile reads: {e}") from None
        out.append((name, info.frames, info.samplerate, offset, size))
    return out
