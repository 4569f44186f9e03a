"""Corpora packed in tar archives (``hubertkit pack``): the same audio as files, as spans
and as archive members gives byte-identical features and labels and bit-identical
training; truncated or rewritten archives and members that are not audio are refused
with the archive and the offset."""

import io
import shutil
import tarfile

import numpy as np
import pytest
import torch
from test_spans import as_spans
from test_trainer import overrides

from hubertkit.data.pack import pack
from hubertkit.data.audio import read_audio
from hubertkit.data.manifest import read_manifest
from hubertkit.errors import HubertkitError


@pytest.fixture(scope="module")
def packed(labelled, tmp_path_factory):
    """The labelled corpus packed from its files (3 archives), and packed from spans."""
    out = tmp_path_factory.mktemp("packed")
    spans = as_spans(labelled / "tsv", out / "spans")
    for split in ("train", "valid"):
        pack(labelled / "tsv", split, out / "files", shard_mb=0.2)
        pack(spans / "tsv", split, out / "from_spans", shard_mb=0.2)
    return out


def test_members_read_as_the_files_they_came_from(labelled, packed):
    files = read_manifest(labelled / "tsv" / "train.tsv")
    assert len(list((packed / "files").glob("train-*.tar"))) > 1
    for folder, source in (("files", files), ("from_spans", read_manifest(packed / "spans" / "tsv" / "train.tsv"))):
        members = read_manifest(packed / folder / "train.tsv")
        assert members.located and len(members) == len(files)
        for a, b, named in zip(files.utterances, members.utterances, source.utterances):
            assert b.member is not None and np.array_equal(read_audio(a), read_audio(b))
            assert b.key == named.key  # alignments and transcripts keyed by the source still find it


def test_features_and_labels_are_byte_identical(labelled, packed, tmp_path):
    from hubertkit.cluster.kmeans import dump_labels
    from hubertkit.features.dump import dump_mfcc

    for folder in ("files", "from_spans"):
        dump_mfcc(packed / folder, "train", 2, "all", tmp_path / folder / "feat", progress=False)
        dump_labels(tmp_path / folder / "feat", "train", labelled / "km20.pt", 2, "all", tmp_path / folder / "lab",
                    progress=False)
        for rank in (0, 1):
            for name, sub in ((f"train_{rank}_2.npy", "feat"), (f"train_{rank}_2.len", "feat"), (f"train_{rank}_2.km", "lab")):
                theirs = labelled / ("labels" if sub == "lab" else "feat") / name
                assert (tmp_path / folder / sub / name).read_bytes() == theirs.read_bytes(), (folder, name)


def test_training_on_archives_gives_the_same_weights(labelled, packed, tmp_path):
    from hubertkit.train.trainer import train

    extra = {"optimization.max_update": 3, "dataset.num_workers": 2}
    train("demo", overrides(labelled, tmp_path / "files", **extra), progress=False)
    args = [a.replace(f"task.data={labelled / 'tsv'}", f"task.data={packed / 'files'}")
            for a in overrides(labelled, tmp_path / "packed", **extra)]
    train("demo", args, progress=False)
    a, b = (torch.load(tmp_path / d / "checkpoint_last.pt", weights_only=True)["model"] for d in ("files", "packed"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_damaged_archives_are_refused_with_archive_and_offset(packed, tmp_path):
    shutil.copytree(packed / "files", tmp_path / "p")
    lines = (tmp_path / "p" / "train.tsv").read_text().splitlines(keepends=True)
    (tmp_path / "p" / "train.tsv").write_text("".join([f"{tmp_path / 'p'}\n", *lines[1:]]))
    manifest = read_manifest(tmp_path / "p" / "train.tsv")
    last = manifest.utterance(len(manifest) - 1)
    offset, size = last.member
    archive = tmp_path / "p" / last.path.rsplit("/", 1)[1]
    archive.write_bytes(archive.read_bytes()[: offset + size // 2])  # truncated
    with pytest.raises(HubertkitError, match=rf"archive .*{archive.name} \(\d+ bytes\) has no member of {size} bytes at "
                                             rf"offset {offset}: the archive is truncated"):
        read_audio(read_manifest(tmp_path / "p" / "train.tsv").utterance(len(manifest) - 1))
    first = manifest.utterance(0)
    shard = tmp_path / "p" / first.path.rsplit("/", 1)[1]
    with tarfile.open(shard, "w") as t:  # rewritten: another member first, longer than the first was
        info = tarfile.TarInfo("notes.txt")
        info.size = 300_000
        t.addfile(info, io.BytesIO(b"x" * info.size))
    with pytest.raises(HubertkitError, match=rf"has changed since its manifest was written: no member of {first.member[1]} "
                                             rf"bytes at offset {first.member[0]}"):
        read_audio(read_manifest(tmp_path / "p" / "train.tsv").utterance(0))
    (tmp_path / "text.tsv").write_text(f"{tmp_path / 'p'}\nnotes.txt\t16000\t{shard.name}:512:300000\n")
    with pytest.raises(HubertkitError, match=r"member notes.txt of .* \(offset 512\) is not audio"):
        read_audio(read_manifest(tmp_path / "text.tsv").utterance(0))


def test_pack_refuses_to_overwrite_its_input(labelled, tmp_path):
    with pytest.raises(HubertkitError, match="would overwrite the manifest or audio it reads"):
        pack(labelled / "tsv", "train", labelled / "tsv")
    with pytest.raises(HubertkitError, match="--shard-mb must be a positive number"):
        pack(labelled / "tsv", "train", tmp_path, shard_mb=0)


def test_manifest_lists_existing_archives_in_place(small_corpus, tmp_path):
    """WebDataset-style shards (audio beside other members) are listed without unpacking;
    each member reads as its file."""
    from hubertkit.data.manifest import make_manifest

    files = sorted(small_corpus.rglob("*.flac"))
    (tmp_path / "shards").mkdir()
    with tarfile.open(tmp_path / "shards" / "a.tar", "w") as t:
        for f in files:
            t.add(f, arcname=str(f.relative_to(small_corpus)))
            info = tarfile.TarInfo(f"{f.relative_to(small_corpus).with_suffix('.txt')}")
            info.size = 3
            t.addfile(info, io.BytesIO(b"abc"))
    counts = make_manifest(tmp_path / "shards", tmp_path / "tsv", valid_percent=0, archives=True)
    manifest = read_manifest(tmp_path / "tsv" / "train.tsv")
    assert counts == {"train": len(files)} and len(manifest) == len(files)
    for f, utt in zip(files, manifest.utterances):
        assert utt.name == str(f.relative_to(small_corpus)) and utt.member is not None
        assert np.array_equal(read_audio(utt), read_audio(file_utterance(f)))


def file_utterance(path):
    """A file as a whole-file utterance."""
    import soundfile as sf

    from hubertkit.data.manifest import Utterance

    return Utterance(str(path), sf.info(path).frames, 1)


def test_a_failed_pack_leaves_no_archive_behind(labelled, tmp_path):
    lines = (labelled / "tsv" / "train.tsv").read_text().splitlines()
    (tmp_path / "tsv").mkdir()
    (tmp_path / "tsv" / "train.tsv").write_text("\n".join([*lines[:4], "missing.flac\t16000", *lines[4:]]) + "\n")
    with pytest.raises(HubertkitError, match="train.tsv:5: audio file .*missing.flac does not exist"):
        pack(tmp_path / "tsv", "train", tmp_path / "out")
    assert not list((tmp_path / "out").iterdir())
