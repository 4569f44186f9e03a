import os

import numpy as np
import pytest
import soundfile as sf
import torch

from hubertkit.data.manifest import read_manifest
from hubertkit.data.shards import read_shard, read_shards
from hubertkit.errors import HubertkitError
from hubertkit.features.dump import dump_mfcc, resolve_ranks
from hubertkit.features.mfcc import mfcc_with_deltas


def test_shards_hold_each_utterance_in_manifest_order(prepared):
    manifest = read_manifest(prepared / "tsv" / "train.tsv")
    shards = read_shards(prepared / "feat", "train", 2)
    assert sum(len(s) for s in shards) == len(manifest)
    utts = manifest.shard(2, 0) + manifest.shard(2, 1)
    feats = [s.utterance(i) for s in shards for i in range(len(s))]
    for utt, f in zip(utts[::5], feats[::5]):
        wav, _ = sf.read(utt.path, dtype="float32")
        np.testing.assert_array_equal(f, mfcc_with_deltas(torch.from_numpy(wav)).numpy())
    # plain numpy reads the file as fairseq's learn_kmeans.py does
    arr = np.load(prepared / "feat" / "train_0_2.npy")
    assert arr.dtype == np.float32 and arr.shape == (shards[0].lengths.sum(), 39)


def test_parallel_jobs_write_identical_files(prepared, tmp_path):
    dump_mfcc(prepared / "tsv", "train", 2, "all", tmp_path, jobs=2, progress=False)
    for name in ("train_0_2.npy", "train_0_2.len", "train_1_2.npy", "train_1_2.len"):
        assert (tmp_path / name).read_bytes() == (prepared / "feat" / name).read_bytes()


def test_rerun_overwrites_cleanly(prepared, tmp_path):
    dump_mfcc(prepared / "tsv", "valid", 1, 0, tmp_path, progress=False)
    first = (tmp_path / "valid_0_1.npy").read_bytes()
    dump_mfcc(prepared / "tsv", "valid", 1, 0, tmp_path, progress=False)
    assert (tmp_path / "valid_0_1.npy").read_bytes() == first
    assert sorted(os.listdir(tmp_path)) == ["valid_0_1.json", "valid_0_1.len", "valid_0_1.npy"]  # .json: its manifest


def test_failure_leaves_nothing_half_written(prepared, tmp_path):
    lines = (prepared / "tsv" / "train.tsv").read_text().splitlines()
    lines.append("missing/file.flac\t32000")
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n")
    with pytest.raises(HubertkitError, match=f"train.tsv:{len(lines)}.*missing/file.flac"):
        dump_mfcc(tmp_path, "train", 1, 0, tmp_path / "feat", progress=False)
    assert list((tmp_path / "feat").iterdir()) == []


def test_npy_len_disagreement_is_an_error(prepared, tmp_path):
    for ext in ("npy", "len"):
        (tmp_path / f"train_0_2.{ext}").write_bytes((prepared / "feat" / f"train_0_2.{ext}").read_bytes())
    with open(tmp_path / "train_0_2.len", "a") as f:
        f.write("7\n")
    with pytest.raises(HubertkitError, match="train_0_2.len lists"):
        read_shard(tmp_path, "train", 0, 2)
    (tmp_path / "train_0_2.len").write_bytes((prepared / "feat" / "train_0_2.len").read_bytes())
    with pytest.raises(HubertkitError, match="missing feature shard file .*train_1_2.npy"):
        read_shards(tmp_path, "train", 2)


def test_resolve_ranks(monkeypatch):
    assert resolve_ranks(1, 4) == [1]
    assert resolve_ranks("all", 3) == [0, 1, 2]
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    assert resolve_ranks("auto", 4) == [2]
    with pytest.raises(HubertkitError, match="NSHARD=3"):
        resolve_ranks("auto", 3)


def test_outputs_get_normal_permissions(prepared, tmp_path):
    import stat

    dump_mfcc(prepared / "tsv", "valid", 1, 0, tmp_path, progress=False)
    mask = os.umask(0)
    os.umask(mask)
    for name in ("valid_0_1.npy", "valid_0_1.len"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask


def test_full_disk_exits_2_leaves_nothing_and_a_rerun_works(prepared, small_disk):
    """Disk full during dump-mfcc: a message naming the file, no temp file holding the space."""
    import subprocess
    import sys

    def run_cli(*args):
        return subprocess.run([sys.executable, "-m", "hubertkit", *map(str, args)], capture_output=True, text=True)

    r = run_cli("dump-mfcc", prepared / "tsv", "valid", 1, 0, small_disk.path / "feat", "-q")
    assert r.returncode == 2 and "No space left on device" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "feat" in r.stderr  # names where it could not write
    assert not list((small_disk.path / "feat").iterdir())  # no temp file keeps the disk full
    small_disk.remount("64m")
    r = run_cli("dump-mfcc", prepared / "tsv", "valid", 1, 0, small_disk.path / "feat", "-q")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (small_disk.path / "feat").iterdir()) == ["valid_0_1.json", "valid_0_1.len", "valid_0_1.npy"]


@pytest.mark.parametrize("env,message", [({"SLURM_ARRAY_TASK_ID": "abc"}, "'abc' is not a non-negative integer"),
                                         ({"RANK": "5", "WORLD_SIZE": "4"}, "WORLD_SIZE=4 but NSHARD=2"),
                                         ({"SLURM_ARRAY_TASK_ID": "3"}, "outside 0..1")])
def test_auto_rank_from_a_bad_environment(monkeypatch, env, message):
    for var in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(HubertkitError, match=message):
        resolve_ranks("auto", 2)
