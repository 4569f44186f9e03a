import shutil

import numpy as np
import pytest
import soundfile as sf

from hubertkit.data.manifest import make_manifest, read_manifest, shard_range
from hubertkit.errors import HubertkitError


def test_manifest_format_and_counts(small_corpus, tmp_path):
    counts = make_manifest(small_corpus, tmp_path, valid_percent=0.25, seed=3)
    assert counts["train"] + counts["valid"] == 24 and counts["valid"] > 0
    lines = (tmp_path / "train.tsv").read_text().splitlines()
    assert lines[0] == str(small_corpus.resolve())
    for line in lines[1:]:
        rel, n = line.split("\t")
        assert int(n) == sf.info(small_corpus / rel).frames


def test_manifest_split_is_reproducible(small_corpus, tmp_path):
    make_manifest(small_corpus, tmp_path / "a", valid_percent=0.3, seed=7)
    make_manifest(small_corpus, tmp_path / "b", valid_percent=0.3, seed=7)
    make_manifest(small_corpus, tmp_path / "c", valid_percent=0.3, seed=8)
    a, b, c = ((tmp_path / d / "valid.tsv").read_text() for d in "abc")
    assert a == b and a != c


def test_manifest_without_valid(small_corpus, tmp_path):
    counts = make_manifest(small_corpus, tmp_path, valid_percent=0)
    assert counts == {"train": 24} and not (tmp_path / "valid.tsv").exists()


def test_manifest_excludes_unreadable_files(small_corpus, tmp_path, caplog):
    corpus = tmp_path / "corpus"
    shutil.copytree(small_corpus, corpus)
    (corpus / "broken.flac").write_bytes(b"not audio at all")
    wav = np.random.default_rng(0).uniform(-0.5, 0.5, 32000).astype(np.float32)
    sf.write(corpus / "8k.flac", wav[:16000], 8000)
    sf.write(corpus / "cut.flac", wav, 16000)
    data = (corpus / "cut.flac").read_bytes()
    (corpus / "cut.flac").write_bytes(data[: len(data) // 2])  # header still says 32000 samples
    counts = make_manifest(corpus, tmp_path / "out", valid_percent=0)
    assert counts == {"train": 24}
    listed = (tmp_path / "out" / "train.tsv").read_text()
    for name, why in (("broken", "unreadable"), ("8k", "not 16 kHz: 8000 Hz"), ("cut", "truncated")):
        assert f"{name}.flac" not in listed and f"{name}.flac: " in caplog.text and why in caplog.text, name
    assert "left out 3 of 27 file(s)" in caplog.text
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    sf.write(wavs / "empty.wav", wav[:0], 16000)  # FLAC cannot hold no samples; WAV can
    sf.write(wavs / "ok.wav", wav, 16000)
    assert make_manifest(wavs, tmp_path / "out2", ext="wav", valid_percent=0) == {"train": 1}
    assert "empty.wav: empty" in caplog.text


def test_manifest_errors(tmp_path):
    with pytest.raises(HubertkitError, match="does not exist"):
        make_manifest(tmp_path / "nope", tmp_path)
    with pytest.raises(HubertkitError, match="no \\*.flac files"):
        make_manifest(tmp_path, tmp_path / "out")


def test_read_manifest_names_bad_line(tmp_path):
    (tmp_path / "x.tsv").write_text("/root\na.flac\t100\nb.flac 200\n")
    with pytest.raises(HubertkitError, match="x.tsv:3"):
        read_manifest(tmp_path / "x.tsv")


def test_a_byte_order_mark_before_the_root_is_named(tmp_path):
    (tmp_path / "x.tsv").write_bytes(f"\ufeff{tmp_path}\na.flac\t100\n".encode())
    with pytest.raises(HubertkitError, match="x.tsv:1: the root directory starts with a byte-order mark"):
        read_manifest(tmp_path / "x.tsv")


def test_a_folder_listed_as_audio_is_named_as_a_folder(tmp_path):
    from hubertkit.data.audio import read_audio

    (tmp_path / "sub.flac").mkdir()
    (tmp_path / "x.tsv").write_text(f"{tmp_path}\nsub.flac\t16000\n")
    with pytest.raises(HubertkitError, match="x.tsv:2: audio file .*sub.flac is a folder, not an audio file"):
        read_audio(read_manifest(tmp_path / "x.tsv").utterance(0), where=str(tmp_path / "x.tsv"))


@pytest.mark.parametrize("total,nshard", [(10, 3), (7, 7), (101, 4), (5, 2)])
def test_shard_range_is_a_partition_with_fairseq_rounding(total, nshard):
    ranges = [shard_range(total, nshard, r) for r in range(nshard)]
    assert ranges[0][0] == 0 and ranges[-1][1] == total
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    # fairseq: start = round(total / nshard * rank) with Python's round
    assert ranges == [(round(total / nshard * r), round(total / nshard * (r + 1))) for r in range(nshard)]


def test_shard_range_errors():
    with pytest.raises(HubertkitError, match="rank 3"):
        shard_range(10, 3, 3)
    with pytest.raises(HubertkitError, match="empty"):
        shard_range(2, 3, 1)
