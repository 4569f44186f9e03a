import pytest

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
