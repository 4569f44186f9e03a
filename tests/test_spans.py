"""Spans of long recordings (``path<TAB>num_samples<TAB>start``): the same audio as
separate files and as spans of one recording per speaker gives byte-identical features,
labels and ``.len`` files, and bit-identical training; a bad span is refused with the
file and position."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from test_trainer import overrides

from hubertkit.data.audio import read_audio
from hubertkit.data.manifest import read_manifest
from hubertkit.errors import HubertkitError


def as_spans(tsv_dir: Path, out: Path, fmt: str = "FLAC") -> Path:
    """Each speaker's utterances of every split, concatenated into one recording; manifests
    of the same utterances, in the same order, as spans of them."""
    waves: dict[str, list[np.ndarray]] = {}
    lines: dict[str, list[tuple[str, int, int]]] = {}
    for split in ("train", "valid"):
        manifest = read_manifest(tsv_dir / f"{split}.tsv")
        for utt in manifest.utterances:
            speaker = Path(utt.name).parent.name
            done = sum(len(w) for w in waves.get(speaker, []))
            wav, _ = sf.read(utt.path, dtype="int16")
            waves.setdefault(speaker, []).append(wav)
            lines.setdefault(split, []).append((f"{speaker}.{fmt.lower()}", len(wav), done))
    (out / "long").mkdir(parents=True)
    for speaker, parts in waves.items():
        sf.write(out / "long" / f"{speaker}.{fmt.lower()}", np.concatenate(parts), 16000, format=fmt, subtype="PCM_16")
    (out / "tsv").mkdir()
    for split, rows in lines.items():
        (out / "tsv" / f"{split}.tsv").write_text("\n".join([str(out / "long"), *(f"{p}\t{n}\t{s}" for p, n, s in rows)]) + "\n")
    return out


@pytest.fixture(scope="module")
def spans(labelled, tmp_path_factory):
    return as_spans(labelled / "tsv", tmp_path_factory.mktemp("spans"))


def test_a_span_reads_the_samples_of_its_file(labelled, spans):
    files, cut = read_manifest(labelled / "tsv" / "train.tsv"), read_manifest(spans / "tsv" / "train.tsv")
    assert cut.located and not files.located and len(files) == len(cut)
    for a, b in zip(files.utterances, cut.utterances):
        assert b.start is not None and b.name == f"{Path(b.path).name}@{b.start}" and b.key == b.name.replace(".flac@", "@")
        assert np.array_equal(read_audio(a), read_audio(b))


@pytest.mark.parametrize("fmt", ["FLAC", "WAV"])
def test_features_labels_and_lengths_are_byte_identical(labelled, spans, tmp_path, fmt):
    from hubertkit.cluster.kmeans import dump_labels
    from hubertkit.features.dump import dump_mfcc

    data = spans if fmt == "FLAC" else as_spans(labelled / "tsv", tmp_path / "wav", fmt)
    dump_mfcc(data / "tsv", "train", 2, "all", tmp_path / "feat", progress=False)
    dump_labels(tmp_path / "feat", "train", labelled / "km20.pt", 2, "all", tmp_path / "lab", progress=False)
    for rank in (0, 1):
        for name, folder in ((f"train_{rank}_2.npy", "feat"), (f"train_{rank}_2.len", "feat"), (f"train_{rank}_2.km", "lab")):
            ours, theirs = tmp_path / folder / name, labelled / ("labels" if folder == "lab" else "feat") / name
            assert ours.read_bytes() == theirs.read_bytes(), name


def test_training_on_spans_gives_the_same_weights(labelled, spans, tmp_path):
    from hubertkit.train.trainer import train

    extra = {"optimization.max_update": 3, "dataset.num_workers": 1}
    train("demo", overrides(labelled, tmp_path / "files", **extra), progress=False)
    cut = overrides(labelled, tmp_path / "spans", **extra)
    cut = [a.replace(f"task.data={labelled / 'tsv'}", f"task.data={spans / 'tsv'}") for a in cut]
    train("demo", cut, progress=False)
    a, b = (torch.load(tmp_path / d / "checkpoint_last.pt", weights_only=True)["model"] for d in ("files", "spans"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a fairseq export records the training data; a span manifest, which fairseq cannot read, is left out
    from hubertkit.model.checkpoint import read_state
    from hubertkit.model.io import export

    for run in ("files", "spans"):
        export(tmp_path / run / "checkpoint_last.pt", tmp_path / f"{run}.pt", "fairseq")
    tasks = [read_state(tmp_path / f"{run}.pt")["cfg"]["task"] for run in ("files", "spans")]
    assert tasks[0]["data"] == str(labelled / "tsv"), tasks[0]
    assert tasks[1]["data"] != str(spans / "tsv") and tasks[1]["label_dir"] == str(labelled / "labels"), tasks[1]


def test_bad_spans_are_refused_with_file_and_position(spans, tmp_path):
    long = spans / "long"
    frames = sf.info(long / "f1.flac").frames
    for line, message in (
        (f"f1.flac\t16000\t{frames - 100}", rf"tsv:2: the span {frames - 100}..{frames - 100 + 16000} is past the end of "
                                            rf".*f1.flac \({frames} samples\)"),
        ("f1.flac\t16000\t-5", "expected 'relative/path<TAB>num_samples' .*<TAB>start'"),
        ("f1.flac\t16000\t5\t7", "expected 'relative/path<TAB>num_samples'"),
        (f"f1.flac\t16000\t{10**20}", "x.tsv:2: 100000000000000000000 is beyond any recording or archive"),
    ):
        (tmp_path / "x.tsv").write_text(f"{long}\n{line}\n")
        with pytest.raises(HubertkitError, match=message):
            read_audio(read_manifest(tmp_path / "x.tsv").utterance(0), where=str(tmp_path / "x.tsv"))


def test_a_span_of_a_truncated_file_is_refused_when_read_and_when_cut(tmp_path):
    """The file's header promises more samples than its data holds: a span beyond the
    data (the seek fails) and one that starts inside it and reads short (the data ends at
    a frame's end, so libsndfile reports no error) are refused by
    training's reader and by the copy that cut and pack write, never returned shorter."""
    from hubertkit.data.audio import standalone_bytes

    samples = (np.random.default_rng(0).standard_normal(48000) * 3000).astype(np.int16)
    sf.write(tmp_path / "t.flac", samples, 16000)
    data = (tmp_path / "t.flac").read_bytes()
    frames = [i for i in range(len(data) - 1) if data[i:i + 2] == b"\xff\xf8"]  # each frame's sync code
    (tmp_path / "t.flac").write_bytes(data[:frames[4]])  # 4 whole frames: the file ends cleanly, early
    for start, length, message in ((40000, 8000, "cannot read audio .*t.flac"),
                                   (10000, 30000, r"the span of 30000 samples from sample 10000 of .*t.flac reads \d+ samples")):
        (tmp_path / "x.tsv").write_text(f"{tmp_path}\nt.flac\t{length}\t{start}\n")
        utt = read_manifest(tmp_path / "x.tsv").utterance(0)
        for read in (lambda: read_audio(utt, where="x.tsv"), lambda: standalone_bytes(utt, "x.tsv")):
            with pytest.raises(HubertkitError, match=f"x.tsv:2: {message}"):
                read()
