"""Feature shards that np.load would read but that would give wrong labels: refused with
exit 2, a message naming the file, and no label file written."""

import shutil

import numpy as np
import pytest

from hubertkit.cli import main
from hubertkit.cluster.kmeans import learn_kmeans


@pytest.fixture
def shard(prepared, tmp_path):
    """A copy of the valid MFCC shard, and a k-means model fitted on train."""
    feat = tmp_path / "feat"
    feat.mkdir()
    for ext in ("npy", "len"):
        shutil.copy(prepared / "feat" / f"valid_0_1.{ext}", feat / f"valid_0_1.{ext}")
    learn_kmeans(prepared / "feat", "train", 2, tmp_path / "km.pt", 10, progress=False)
    return feat


def refused(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as e:
        main([*map(str, argv), "-q"])
    assert e.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("layout", ["float64", "fortran", "big-endian"])
def test_other_npy_layouts_are_refused(shard, tmp_path, capsys, layout):
    x = np.load(shard / "valid_0_1.npy")
    y = {"float64": x.astype(np.float64), "fortran": np.asfortranarray(x), "big-endian": x.astype(">f4")}[layout]
    np.save(shard / "valid_0_1.npy", y)
    err = refused(capsys, "dump-labels", shard, "valid", tmp_path / "km.pt", 1, 0, tmp_path / "lab")
    assert "valid_0_1.npy" in err and "float32, little-endian, C order" in err
    assert not (tmp_path / "lab").exists() or not list((tmp_path / "lab").iterdir())
    err = refused(capsys, "learn-kmeans", shard, "valid", 1, tmp_path / "km2.pt", 5)
    assert "valid_0_1.npy" in err and not (tmp_path / "km2.pt").exists()


@pytest.mark.parametrize("entry", ["-5", "100000000000000000000"])
def test_impossible_len_entries_are_refused(shard, tmp_path, capsys, entry):
    lengths = (shard / "valid_0_1.len").read_text().split()
    if entry.startswith("-"):  # the total unchanged: only the entry itself gives it away
        lengths[0], lengths[1] = str(int(lengths[0]) + int(lengths[1]) + 5), entry
    else:
        lengths[0] = entry
    (shard / "valid_0_1.len").write_text("\n".join(lengths) + "\n")
    err = refused(capsys, "dump-labels", shard, "valid", tmp_path / "km.pt", 1, 0, tmp_path / "lab")
    assert "valid_0_1.len" in err and "Traceback" not in err
    assert not (tmp_path / "lab" / "valid_0_1.km").exists()


def test_non_finite_features_are_refused(shard, tmp_path, capsys):
    x = np.load(shard / "valid_0_1.npy")
    lengths = np.loadtxt(shard / "valid_0_1.len", dtype=int)
    x[lengths[0] + 3, 5] = np.nan  # in the second utterance
    np.save(shard / "valid_0_1.npy", x)
    err = refused(capsys, "dump-labels", shard, "valid", tmp_path / "km.pt", 1, 0, tmp_path / "lab")
    assert "utterance 1 (line 2 of its .len) has NaN" in err and not (tmp_path / "lab" / "valid_0_1.km").exists()
    err = refused(capsys, "learn-kmeans", shard, "valid", 1, tmp_path / "km2.pt", 5)
    assert "NaN" in err and not (tmp_path / "km2.pt").exists()


def test_empty_npy_is_refused(shard, tmp_path, capsys):
    (shard / "valid_0_1.npy").write_bytes(b"")
    err = refused(capsys, "dump-labels", shard, "valid", tmp_path / "km.pt", 1, 0, tmp_path / "lab")
    assert "valid_0_1.npy is not a valid .npy file" in err


def test_shards_of_two_dumps_are_not_mixed(labelled, tmp_path, capsys):
    """Two dumps of different manifests into one folder: learn-kmeans and dump-labels refuse the mix."""
    from hubertkit.features.dump import dump_mfcc

    other = tmp_path / "tsv"
    other.mkdir()
    rows = (labelled / "tsv" / "train.tsv").read_text().splitlines()
    (other / "train.tsv").write_text("\n".join(rows[:1] + rows[1:][::-1]) + "\n")  # same files, another order
    dump_mfcc(labelled / "tsv", "train", 2, "all", tmp_path / "feat", progress=False)
    dump_mfcc(other, "train", 2, 1, tmp_path / "feat", progress=False)  # rank 1 only, from the other manifest
    err = refused(capsys, "learn-kmeans", tmp_path / "feat", "train", 2, tmp_path / "km.pt", 5)
    assert "come from 2 different manifests (ranks [0] vs [1])" in err and not (tmp_path / "km.pt").exists()
    err = refused(capsys, "dump-labels", tmp_path / "feat", "train", labelled / "km20.pt", 2, 0, tmp_path / "lab")
    assert "come from 2 different manifests (ranks [0] vs [1])" in err and not (tmp_path / "lab").exists()


def test_audio_shorter_than_a_frame_is_named(tmp_path, caplog):
    import soundfile as sf

    from hubertkit.features.dump import dump_mfcc

    sf.write(tmp_path / "short.wav", np.zeros(300, dtype=np.float32), 16000)
    (tmp_path / "train.tsv").write_text(f"{tmp_path}\nshort.wav\t300\n")
    dump_mfcc(tmp_path, "train", 1, 0, tmp_path / "feat", progress=False)
    assert "train.tsv:2: " in caplog.text and "short.wav (300 samples) is shorter than one frame" in caplog.text
    assert (tmp_path / "feat" / "train_0_1.len").read_text() == "0\n"  # the line stays, as fairseq's


def test_small_refusals(prepared, tmp_path, capsys):
    """Each a message and exit 2, where a traceback or a wrong file came before."""
    (tmp_path / "latin1.tsv").write_bytes(b"/root\ncaf\xe9.wav\t16000\n")
    (tmp_path / "latin1").mkdir()
    (tmp_path / "latin1" / "train.tsv").write_bytes((tmp_path / "latin1.tsv").read_bytes())
    assert "train.tsv:2: not UTF-8" in refused(capsys, "dump-mfcc", tmp_path / "latin1", "train", 1, 0, tmp_path / "f")
    assert "--max-iter must be at least 1" in refused(capsys, "learn-kmeans", prepared / "feat", "train", 2, tmp_path / "k.pt", 5,
                                                       "--max-iter", 0)
    (tmp_path / "kmdir").mkdir()
    assert "is a directory" in refused(capsys, "learn-kmeans", prepared / "feat", "train", 2, tmp_path / "kmdir", 5)
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "train.km").write_text("")
    assert "hold no labels" in refused(capsys, "make-dict", tmp_path / "lab")
    assert not (tmp_path / "lab" / "dict.km.txt").exists()
    (tmp_path / "huge").mkdir()
    (tmp_path / "huge" / "train.tsv").write_text(f"/root\na.wav\t{10**23}\n")  # an OverflowError traceback before
    assert "train.tsv:2: 100000000000000000000000 samples is not a length of audio" in refused(
        capsys, "dump-mfcc", tmp_path / "huge", "train", 1, 0, tmp_path / "f")


def test_pickled_transformers_weights_are_refused(tmp_path):
    import argparse

    import torch

    from hubertkit.errors import HubertkitError
    from hubertkit.model import HubertModel, preset
    from hubertkit.model.convert import export_hf, import_hf

    export_hf(HubertModel(preset("tiny")), tmp_path / "hf")
    state = torch.load(tmp_path / "hf" / "pytorch_model.bin", weights_only=True)
    torch.save({**state, "extra": argparse.Namespace(a=1)}, tmp_path / "hf" / "pytorch_model.bin")
    with pytest.raises(HubertkitError, match="pickles Python objects besides tensors"):
        import_hf(tmp_path / "hf")
