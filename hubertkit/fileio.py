"""Atomic file writes: a reader never sees a half-written output."""

from __future__ import annotations

import contextlib
import errno
import glob
import logging
import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path

from hubertkit.errors import HubertkitError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _owner_tag() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _remove_stale_temps(path: Path) -> None:
    """Temp files of ``path`` left by a killed or failed writer on this host (its process
    is gone): they would hold disk space (a full disk stays full) and confuse a reader of
    the folder. Another host's, or a live process's, are left alone."""
    host = socket.gethostname()
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        owner = stale.name[len(path.name) + 2 :].split(".", 1)[0]
        owner_host, _, pid = owner.rpartition("-")
        if owner_host != host or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            stale.unlink(missing_ok=True)
        except PermissionError:  # alive, someone else's
            pass


class AtomicFile:
    """A temporary file beside ``path`` that ``commit()`` fsyncs and renames over it."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(self.path)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.{_owner_tag()}.", suffix=".tmp", dir=self.path.parent)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would make every output private
        os.close(fd)
        self.tmp = Path(tmp)

    def commit(self) -> None:
        with open(self.tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self.tmp, self.path)
        try:
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)


# A write that fails for these reasons is the disk's fault, not the data's: say which file.
_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EIO}


def disk_error(path: str | os.PathLike, e: OSError) -> Exception:
    """``e`` as a message naming the output being written, when it is a disk error."""
    if e.errno in _DISK_ERRORS:
        return HubertkitError(f"cannot write {path}: {e.strerror} (nothing half-written is left; free space and re-run)")
    return e


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success."""
    f = AtomicFile(path)
    try:
        yield f.tmp
        f.commit()
    except OSError as e:
        raise disk_error(path, e) from None
    finally:
        f.discard()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w"):
    """Like ``open(path, mode)`` for writing, but the file appears only when complete."""
    with atomic_path(path) as tmp:
        with open(tmp, mode) as f:
            yield f


@contextlib.contextmanager
def atomic_lines(path: str | os.PathLike):
    """Yield ``write(text)`` for a text file built piece by piece (a manifest of millions
    of lines, not held in memory) that appears only when the block completes. A disk
    error writing it names the file; any other error of the block propagates unchanged."""
    f = AtomicFile(path)
    try:
        with open(f.tmp, "w") as out:
            def write(text: str) -> None:
                try:
                    out.write(text)
                except OSError as e:
                    raise disk_error(path, e) from None

            yield write
            with _naming(path):
                out.flush()
        with _naming(path):
            f.commit()
    finally:
        f.discard()


@contextlib.contextmanager
def _naming(path: str | os.PathLike):
    try:
        yield
    except OSError as e:
        raise disk_error(path, e) from None


def save_torch(obj, path: str | os.PathLike, what: str = "", **kwargs) -> None:
    """``torch.save`` atomically. A full disk is an error naming the file (torch's zip
    writer reports one as a RuntimeError, not an OSError), and an older file at ``path``
    is left intact."""
    import torch  # here, so that importing this module does not load torch

    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp, **kwargs)
        except (OSError, RuntimeError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else _disk_reason(tmp) or str(e).splitlines()[0]
            kept = f"the earlier {path.name} is intact" if path.is_file() else "nothing was written"
            raise HubertkitError(f"cannot write {what + ' ' if what else ''}{path}: {why} ({kept})") from None


def _disk_reason(tmp: Path) -> str | None:
    """Why a write to ``tmp`` failed, when the disk is the cause: torch's zip writer hides
    ``No space left on device`` behind its own message, so one more write asks the disk."""
    try:
        with open(tmp, "ab") as f:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        return e.strerror if e.errno in _DISK_ERRORS else None
    return None


def read_utf8(path: str | os.PathLike, what: str) -> str:
    """A text file's contents; a file in another encoding is an error naming it and the
    line of the first byte that is not UTF-8."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise HubertkitError(f"{what} {path}:{line} is not UTF-8 text (byte {e.start}): save it as UTF-8") from None


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` (a folder
    of several files, e.g. a Hugging Face model, appears whole or not at all)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def open_lock_file(path: str | os.PathLike) -> int:
    """A descriptor of the lock file ``path``, created if missing. A symbolic link, or a
    file with other names (hard links), is refused: a lock in a shared folder must never
    lead hubertkit into writing a file elsewhere."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise HubertkitError(f"{path} is a symbolic link, not a lock file: remove it (hubertkit never writes "
                                 "through a link there)") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise HubertkitError(f"{path} is not a lock file of hubertkit's (not a regular file with one name): remove it")
    return fd


class FileLock:
    """A blocking ``flock`` on a lock file, for work several processes may start at once
    (e.g. building a cache): the first does it, the others wait, then find it done."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __enter__(self):
        import fcntl

        self.fd = open_lock_file(self.path)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except OSError as e:  # a file system without locks: go on unguarded (the writes stay atomic)
            logging.getLogger(__name__).warning("cannot lock %s (%s)", self.path, e.strerror)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


class FolderLock:
    """An exclusive lock on a folder for one process's run (``flock`` on ``.lock`` in it,
    released when the process ends, however it ends): a second run on the same folder
    stops at once, naming the holder, instead of both overwriting each other's files."""

    def __init__(self, folder: str | os.PathLike, what: str):
        import fcntl

        self.path = Path(folder) / ".lock"
        self.fd = open_lock_file(self.path)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(self.fd)
            raise HubertkitError(f"{what} {folder} is in use by {holder}: wait for that run to end, or use another folder") from None
        except OSError as e:  # a file system without locks (some network mounts): run unguarded, and say so
            logging.getLogger(__name__).warning("cannot lock %s (%s); nothing stops a second run on it", folder, e.strerror)
            return
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"hubertkit process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None
