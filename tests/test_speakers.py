import pytest

from hubertkit.data.speakers import read_speakers, speaker_from_path, write_speakers
from hubertkit.errors import HubertkitError


def test_speaker_from_librispeech_and_flat_layouts():
    assert speaker_from_path("train-clean-100/103/1240/103-1240-0000.flac") == "103"
    assert speaker_from_path("103/1240/103-1240-0000.flac") == "103"
    assert speaker_from_path("m1/m1_000.flac") == "m1"
    assert speaker_from_path("corpus/alice/take2/utt.wav") == "take2"  # not LibriSpeech: the parent
    with pytest.raises(HubertkitError, match="speaker map"):
        speaker_from_path("utt.flac")


def test_write_and_read_speakers(prepared, tmp_path):
    counts = write_speakers(prepared / "tsv", ["train", "valid"], tmp_path)
    assert counts["train"] == 8
    train, vocab = read_speakers(tmp_path, "train", len((prepared / "tsv" / "train.tsv").read_text().splitlines()) - 1)
    assert vocab == sorted(vocab) and len(vocab) == 8
    names = (tmp_path / "train.spk").read_text().split()
    assert [vocab[i] for i in train] == names
    with pytest.raises(HubertkitError, match="lines but the manifest"):
        read_speakers(tmp_path, "train", 3)


def test_speaker_map_and_unknown_speakers(prepared, tmp_path):
    rows = (prepared / "tsv" / "train.tsv").read_text().splitlines()[1:]
    valid = (prepared / "tsv" / "valid.tsv").read_text().splitlines()[1:]
    paths = [r.split("\t")[0] for r in rows + valid]
    # keys in each accepted form: the path, the path without extension, the stem
    lines = [f"{p}\tA" if i % 3 == 0 else f"{p.rsplit('.', 1)[0]}\tB" if i % 3 == 1 else f"{p.split('/')[-1][:-5]}\tC"
             for i, p in enumerate(paths[: len(rows)])]
    lines += [f"{p}\tnew" for p in paths[len(rows):]]
    (tmp_path / "map.tsv").write_text("\n".join(lines) + "\n")
    write_speakers(prepared / "tsv", ["train", "valid"], tmp_path / "out", tmp_path / "map.tsv")
    assert (tmp_path / "out" / "dict.spk.txt").read_text().split() == ["A", "B", "C"]
    ids, _ = read_speakers(tmp_path / "out", "valid", len(valid))
    assert ids.tolist() == [-100] * len(valid)  # speakers train never saw are ignored by the loss
    (tmp_path / "bad.tsv").write_text("only-one-column\n")
    with pytest.raises(HubertkitError, match="bad.tsv:1"):
        write_speakers(prepared / "tsv", ["train"], tmp_path / "x", tmp_path / "bad.tsv")
