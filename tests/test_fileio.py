import os

import pytest

from hubertkit.errors import HubertkitError
from hubertkit.fileio import atomic_dir


def test_atomic_dir_replaces_whole_or_not_at_all(tmp_path):
    out = tmp_path / "model"
    with atomic_dir(out) as tmp:
        (tmp / "a").write_text("1")
    assert [p.name for p in out.iterdir()] == ["a"]
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "b").write_text("half")
            raise RuntimeError("crash while writing")
    assert [p.name for p in out.iterdir()] == ["a"]  # the old folder is untouched
    with atomic_dir(out) as tmp:
        (tmp / "c").write_text("2")
    assert [p.name for p in out.iterdir()] == ["c"]  # replaced, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folders left


def test_stale_temps_of_dead_writers_are_removed(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    from hubertkit.fileio import write_text

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    host = socket.gethostname()
    stale = tmp_path / f".out.txt.{host}-{dead}.abc.tmp"  # a killed writer's
    alive = tmp_path / f".out.txt.{host}-{os.getpid()}.def.tmp"  # a live writer's (this process)
    other = tmp_path / f".out.txt.otherhost-{dead}.ghi.tmp"  # another machine's, on a shared disk
    for p in (stale, alive, other):
        p.write_text("partial")
    write_text(tmp_path / "out.txt", "done")
    assert not stale.exists() and alive.exists() and other.exists()
    assert (tmp_path / "out.txt").read_text() == "done"


def test_a_lock_that_is_a_symlink_or_hard_link_is_refused_and_its_target_untouched(tmp_path):
    """Anyone who can write into a shared save_dir could point .lock at another file: the
    lock must neither follow the link nor truncate a file that is not its own."""
    from hubertkit.fileio import FileLock, FolderLock

    notes = tmp_path / "notes.txt"
    notes.write_text("precious\n")
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / ".lock").symlink_to(notes)
    with pytest.raises(HubertkitError, match="symbolic link"):
        FolderLock(tmp_path / "ck", "checkpoint.save_dir")
    (tmp_path / "ck" / ".lock").unlink()
    os.link(notes, tmp_path / "ck" / ".lock")
    with pytest.raises(HubertkitError, match="not a lock file"):
        FolderLock(tmp_path / "ck", "checkpoint.save_dir")
    with pytest.raises(HubertkitError, match="not a lock file"):
        with FileLock(tmp_path / "ck" / ".lock"):
            pass
    assert notes.read_text() == "precious\n"
    (tmp_path / "ck" / ".lock").unlink()
    FolderLock(tmp_path / "ck", "checkpoint.save_dir").release()  # a plain run still locks


def test_a_full_disk_under_torch_save_is_named_as_such(small_disk):
    """torch's zip writer reports a full disk as 'enforce fail ... unexpected pos'; the
    message says what the disk says, and nothing is left behind."""
    import torch

    from hubertkit.fileio import save_torch

    with pytest.raises(HubertkitError, match=r"cannot write checkpoint .*big.pt: No space left on device \(nothing was written\)"):
        save_torch({"w": torch.zeros(100_000)}, small_disk.path / "big.pt", "checkpoint")
    assert not list(small_disk.path.iterdir())


def test_lines_written_piece_by_piece_appear_whole_or_not_at_all(small_disk, tmp_path):
    """A full disk names the file; an error of the writing block itself propagates as it
    was raised (it is not taken for a disk error); neither leaves a file or a temp."""
    from hubertkit.fileio import atomic_lines

    with pytest.raises(HubertkitError, match=r"cannot write .*big.tsv: No space left on device"):
        with atomic_lines(small_disk.path / "big.tsv") as write:
            for _ in range(10_000):
                write("x" * 99 + "\n")
    assert not list(small_disk.path.iterdir())
    with pytest.raises(OSError, match="Input/output error"):
        with atomic_lines(tmp_path / "m.tsv") as write:
            write("root\n")
            raise OSError(5, "Input/output error")
    assert not list(tmp_path.glob("*m.tsv*")) and not [p for p in tmp_path.iterdir() if p.name != "disk"]
    with atomic_lines(tmp_path / "m.tsv") as write:
        write("root\n")
        write("a\t1\n")
    assert (tmp_path / "m.tsv").read_text() == "root\na\t1\n"
