"""``hubertkit cut``: spans and archive members written out as files of their own, with a
manifest fairseq reads: the same samples, byte-identical features, resumable, and never
writing outside ``--dest``."""

import numpy as np
import pytest
import soundfile as sf
from test_spans import as_spans

from hubertkit.cli import main
from hubertkit.data import cut as cut_module
from hubertkit.data.cut import cut
from hubertkit.data.manifest import read_manifest
from hubertkit.data.pack import pack
from hubertkit.errors import HubertkitError


@pytest.fixture(scope="module")
def sources(labelled, tmp_path_factory):
    """The labelled corpus's train split as spans of long recordings, and packed from them."""
    out = tmp_path_factory.mktemp("cut_sources")
    spans = as_spans(labelled / "tsv", out / "spans")
    pack(spans / "tsv", "train", out / "packed", shard_mb=0.2)
    return {"spans": spans / "tsv", "packed": out / "packed"}


@pytest.mark.parametrize("layout", ["spans", "packed"])
def test_cut_files_hold_the_samples_and_give_the_same_features(labelled, sources, layout, tmp_path):
    from hubertkit.features.dump import dump_mfcc

    main(["cut", str(sources[layout]), "train", "--dest", str(tmp_path / "cut"), "--jobs", "2", "-q"])
    files = read_manifest(labelled / "tsv" / "train.tsv")
    text = (tmp_path / "cut" / "train.tsv").read_text().splitlines()
    assert text[0] == str(tmp_path / "cut") and len(text) == len(files) + 1
    for line, original in zip(text[1:], files.utterances):
        name, samples = line.split("\t")  # fairseq's readers assert exactly two fields
        path = tmp_path / "cut" / name
        assert int(samples) == original.num_samples == sf.info(path).frames
        assert np.array_equal(sf.read(path, dtype="int16")[0], sf.read(original.path, dtype="int16")[0])
    cut_manifest = read_manifest(tmp_path / "cut" / "train.tsv")
    assert not cut_manifest.located
    assert all(a.key == b.key for a, b in zip(cut_manifest.utterances, read_manifest(sources[layout] / "train.tsv").utterances))
    dump_mfcc(tmp_path / "cut", "train", 2, "all", tmp_path / "feat", progress=False)
    for rank in (0, 1):
        for name in (f"train_{rank}_2.npy", f"train_{rank}_2.len"):
            assert (tmp_path / "feat" / name).read_bytes() == (labelled / "feat" / name).read_bytes(), name


def test_an_interrupted_cut_leaves_whole_files_and_a_rerun_writes_the_rest(sources, tmp_path, monkeypatch):
    made = []
    real = cut_module.standalone_bytes

    def fail_on_the_fourth(utt, where):
        if len(made) == 3:
            raise OSError(5, "Input/output error")
        made.append(utt.name)
        return real(utt, where)

    monkeypatch.setattr(cut_module, "standalone_bytes", fail_on_the_fourth)
    with pytest.raises(OSError, match="Input/output error"):
        cut(sources["spans"], "train", tmp_path / "cut")
    assert not (tmp_path / "cut" / "train.tsv").exists()
    left = sorted(p.name for p in (tmp_path / "cut").rglob("*") if p.is_file())
    assert len(left) == 3 and not any(name.endswith(".tmp") for name in left)
    monkeypatch.setattr(cut_module, "standalone_bytes", real)
    r = cut(sources["spans"], "train", tmp_path / "cut")
    total = len(read_manifest(sources["spans"] / "train.tsv"))
    assert r["utterances"] == total and r["written"] == total - 3
    assert cut(sources["spans"], "train", tmp_path / "cut")["written"] == 0


def test_cut_refuses_names_outside_dest_and_twice_listed_utterances(sources, tmp_path):
    lines = (sources["spans"] / "train.tsv").read_text().splitlines()
    root, first = lines[0], lines[1].split("\t")
    for bad, message in (([f"../long/{first[0]}", *first[1:]], "would be written outside --dest"),
                         (first, r"is also line 2's")):
        (tmp_path / "tsv").mkdir(exist_ok=True)
        (tmp_path / "tsv" / "train.tsv").write_text("\n".join([root, lines[1], "\t".join(bad)]) + "\n")
        with pytest.raises(HubertkitError, match=message):
            cut(tmp_path / "tsv", "train", tmp_path / "out")
        assert not any((tmp_path / "out").iterdir())
    with pytest.raises(HubertkitError, match="would overwrite the manifest or audio it reads"):
        cut(sources["spans"], "train", sources["spans"])
    with pytest.raises(HubertkitError, match="--jobs must be at least 1"):
        cut(sources["spans"], "train", tmp_path / "out", jobs=0)


@pytest.mark.parametrize("fmt,subtype,suffix", [("FLAC", "PCM_16", "flac"), ("FLAC", "PCM_24", "flac"),
                                                ("WAV", "PCM_24", "flac"), ("WAV", "FLOAT", "wav")])
def test_a_span_is_cut_in_its_files_own_sample_type(tmp_path, fmt, subtype, suffix):
    """24-bit samples stay 24-bit (read as int32, written as PCM_24), float stays float (as
    WAV): the cut file holds exactly the recording's samples of the span."""
    rng = np.random.default_rng(0)
    wav = np.clip(rng.standard_normal((48000, 1)) * 0.1, -1, 1).astype(np.float32)
    (tmp_path / "rec").mkdir()
    sf.write(tmp_path / "rec" / f"long.{fmt.lower()}", wav, 16000, format=fmt, subtype=subtype)
    (tmp_path / "rec" / "train.tsv").write_text(f"{tmp_path / 'rec'}\nlong.{fmt.lower()}\t20000\t12345\n")
    cut(tmp_path / "rec", "train", tmp_path / "out")
    (name, size), = [line.split("\t") for line in (tmp_path / "out" / "train.tsv").read_text().splitlines()[1:]]
    assert name == f"long@12345.{suffix}" and size == "20000"
    dtype = "float32" if subtype == "FLOAT" else "int32"
    source = sf.read(tmp_path / "rec" / f"long.{fmt.lower()}", dtype=dtype)[0][12345:32345]
    written, info = sf.read(tmp_path / "out" / name, dtype=dtype)[0], sf.info(tmp_path / "out" / name)
    assert np.array_equal(written, source) and info.subtype == ("FLOAT" if subtype == "FLOAT" else subtype)


def test_spans_of_recordings_that_differ_only_in_extension_are_refused(tmp_path):
    """rec.flac and rec.wav from the same sample would both be cut to rec@0.flac: the
    second would be taken for a file an earlier run wrote, and its audio lost."""
    (tmp_path / "rec").mkdir()
    for fmt in ("flac", "wav"):
        sf.write(tmp_path / "rec" / f"rec.{fmt}", np.zeros(32000, dtype=np.int16), 16000)
    (tmp_path / "rec" / "train.tsv").write_text(f"{tmp_path / 'rec'}\nrec.flac\t16000\t0\nrec.wav\t16000\t0\n")
    with pytest.raises(HubertkitError, match=r"train.tsv:3: rec.wav@0 would be cut to the same file as line 2's rec.flac@0"):
        cut(tmp_path / "rec", "train", tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
