import os
import pickle
import shutil
from collections import Counter

import numpy as np
import pytest

from hubertkit.data import label_store
from hubertkit.data.label_store import open_store
from hubertkit.data.labels import read_labels
from hubertkit.errors import HubertkitError


def write_lines(path, lines, end="\n"):
    path.write_text(end.join(" ".join(map(str, line)) for line in lines) + end)


def assert_same(store, lines):
    assert len(store) == len(lines)
    assert store.lengths.tolist() == [len(line) for line in lines]
    for i, line in enumerate(lines):
        assert store[i].tolist() == list(line)
    counts = Counter(v for line in lines for v in line)
    assert dict(zip(store.ids.tolist(), store.counts.tolist())) == counts
    assert store.ids.tolist() == sorted(counts)


def test_store_holds_what_the_text_parser_reads(tmp_path, monkeypatch):
    """Ragged lines, empty lines, CRLF, tabs and a last line without its newline, parsed in
    blocks much smaller than the file: the same labels as the line-by-line reader."""
    monkeypatch.setattr(label_store, "BLOCK_BYTES", 64)
    rng = np.random.default_rng(0)
    lines = [rng.integers(0, 100, rng.integers(0, 40)).tolist() for _ in range(50)]
    path = tmp_path / "train.km"
    path.write_text("\r\n".join("\t".join(map(str, line)) if i % 2 else " ".join(map(str, line)) for i, line in enumerate(lines)))
    assert [list(x) for x in read_labels(path)] == lines
    store = open_store(path)
    assert_same(store, lines)
    assert store.values.dtype == np.uint8 and isinstance(store.values, np.memmap)


def test_store_widens_its_type_when_a_later_block_needs_it(tmp_path, monkeypatch):
    monkeypatch.setattr(label_store, "BLOCK_BYTES", 32)
    lines = [[1, 2, 3]] * 20 + [[300, 4]] + [[5]] * 20 + [[70000]] + [[10**12, 0]]
    write_lines(tmp_path / "x.km", lines)
    store = open_store(tmp_path / "x.km")
    assert_same(store, lines)
    assert store.values.dtype == np.int64
    write_lines(tmp_path / "y.km", lines[:-1])
    assert open_store(tmp_path / "y.km").values.dtype == np.uint32


def test_store_is_built_once_and_rebuilt_when_the_text_changes(tmp_path):
    path = tmp_path / "train.km"
    write_lines(path, [[1, 2], [3]])
    open_store(path)
    meta = tmp_path / "train.km.store.json"
    built = meta.stat().st_mtime_ns
    assert open_store(path)[1].tolist() == [3] and meta.stat().st_mtime_ns == built  # reused
    write_lines(path, [[1, 2], [4]])  # same size, new content
    assert open_store(path)[1].tolist() == [4]
    path.write_text("")
    assert len(open_store(path)) == 0


@pytest.mark.parametrize("text, line", [("1 2\n3 x\n", 2), ("1\n\n-3\n", 3), ("1 2.5\n", 1),
                                         ("1\n99999999999999999999\n", 2)])
def test_non_integer_labels_name_their_line(tmp_path, text, line):
    (tmp_path / "bad.km").write_text(text)
    with pytest.raises(HubertkitError, match=rf"bad.km:{line}: labels must be non-negative integers"):
        open_store(tmp_path / "bad.km")
    assert not list(tmp_path.glob("bad.km.*.npy")) and not list(tmp_path.glob(".*.tmp"))  # nothing half-written


def test_read_only_folder_keeps_the_store_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HUBERTKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(label_store.os, "access", lambda path, mode: False)
    write_lines(tmp_path / "train.km", [[7, 8]])
    assert open_store(tmp_path / "train.km")[0].tolist() == [7, 8]
    assert not list(tmp_path.glob("train.km.*")) and list((tmp_path / "cache").rglob("train.km.values.npy"))


def test_a_pickled_store_maps_the_files_again(tmp_path):
    """DataLoader workers started by spawn or forkserver receive the store pickled: the
    labels must not travel with it."""
    lines = [list(range(50))] * 400
    write_lines(tmp_path / "train.km", lines)
    store = open_store(tmp_path / "train.km")
    data = pickle.dumps(store)
    assert len(data) < 1000 < store.values.nbytes
    assert pickle.loads(data)[399].tolist() == lines[399]


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-1])


def _garble(path):
    path.write_bytes(b"\x93NUMPY garbage" + path.read_bytes()[14:])


@pytest.mark.parametrize("damage", [
    lambda d: np.save(d / "train.km.offsets.npy", np.array([0, 1])),  # offsets of another file
    lambda d: _truncate(d / "train.km.values.npy"),
    lambda d: (d / "train.km.values.npy").write_bytes(b""),
    lambda d: _garble(d / "train.km.values.npy"),
    lambda d: np.save(d / "train.km.offsets.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True),
    lambda d: np.save(d / "train.km.values.npy", np.array([1.5, 2.5, 3.5])),
], ids=["offsets", "truncated", "empty", "garbled", "pickled", "float"])
def test_a_damaged_store_is_rebuilt(tmp_path, damage):
    write_lines(tmp_path / "train.km", [[1, 2], [3]])
    open_store(tmp_path / "train.km")
    damage(tmp_path)
    assert_same(open_store(tmp_path / "train.km"), [[1, 2], [3]])


@pytest.mark.parametrize("how", ["touch -r", "cp -p", "recreate"])
def test_an_edit_that_keeps_size_and_mtime_is_noticed(tmp_path, how):
    path = tmp_path / "train.km"
    write_lines(path, [[1, 2], [3]])
    assert open_store(path)[1].tolist() == [3]
    before = os.stat(path)
    if how == "touch -r":  # edited in place, then its times put back
        with open(path, "r+") as f:
            f.write("5")
    elif how == "cp -p":
        write_lines(tmp_path / "other.km", [[5, 2], [3]])
        shutil.copy2(tmp_path / "other.km", path)
    else:  # removed and written again (a file system may reuse the inode)
        path.unlink()
        write_lines(path, [[5, 2], [3]])
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.path.getsize(path) == before.st_size and os.stat(path).st_mtime_ns == before.st_mtime_ns
    assert open_store(path)[0].tolist() == [5, 2]


def test_an_empty_cache_variable_means_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("HUBERTKIT_CACHE", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(label_store.os, "access", lambda path, mode: False)
    assert label_store.store_base(tmp_path / "x.km").is_relative_to(tmp_path / "home" / ".cache" / "hubertkit")


def test_a_bad_line_in_a_later_block_is_named_by_its_line_in_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(label_store, "BLOCK_BYTES", 50)
    lines = [[i % 7] * 5 for i in range(100)]
    write_lines(tmp_path / "train.km", lines + [["3", "4x"]] + lines)
    with pytest.raises(HubertkitError, match=r"train.km:101: labels must be non-negative integers below 2\*\*63, got '3 4x'"):
        open_store(tmp_path / "train.km")


def test_a_build_called_from_an_unguarded_script_stops_instead_of_hanging(tmp_path):
    """The build's worker processes (spawn) import the caller's script again: without a
    ``__main__`` guard each would wait for the lock its parent holds."""
    import subprocess
    import sys

    write_lines(tmp_path / "x.km", [[1, 2, 3, 4, 5, 6, 7]] * 50)
    (tmp_path / "script.py").write_text("import hubertkit.data.label_store as ls\nls.BLOCK_BYTES = 64\n"
                                        "print(len(ls.open_store('x.km')))\n")
    r = subprocess.run([sys.executable, "script.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and 'under `if __name__ == "__main__":`' in r.stderr, r.stderr[-2000:]
    (tmp_path / "script.py").write_text("import hubertkit.data.label_store as ls\nls.BLOCK_BYTES = 64\n"
                                        "if __name__ == '__main__':\n    print(len(ls.open_store('x.km')))\n")
    r = subprocess.run([sys.executable, "script.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "50", r.stderr[-2000:]


def test_a_full_disk_while_building_is_named_and_leaves_nothing(small_disk):
    path = small_disk.path / "train.km"
    write_lines(path, [[i % 10 for i in range(40)]] * 300)  # 24 KB of text; the store needs more than is left
    small_disk.remount("40k")
    with pytest.raises(HubertkitError, match="No space left on device"):
        open_store(path)
    assert sorted(p.name for p in small_disk.path.iterdir() if not p.name.startswith(".train.km.store.lock")) == ["train.km"]
    small_disk.remount("1m")
    assert len(open_store(path)) == 300
