"""hubertkit align: PocketSphinx word and phone alignments in the corpus format, checked
against the demo corpus's exact (synthesizer) timings."""

import json
import shutil

import numpy as np
import pytest

from hubertkit.data.alignments import frame_phones, read_alignments
from hubertkit.data.forced_align import align
from hubertkit.data.manifest import make_manifest
from hubertkit.errors import HubertkitError

pytest.importorskip("pocketsphinx")


@pytest.fixture(scope="module")
def voice(tmp_path_factory, demo_dir):
    """Five utterances of one demo voice, with a manifest."""
    root = tmp_path_factory.mktemp("align")
    (root / "f1").mkdir()
    for f in sorted((demo_dir / "f1").glob("*.flac"))[:5]:
        shutil.copy(f, root / "f1" / f.name)
    make_manifest(root, root, valid_percent=0)
    return root


def test_alignments_cover_the_audio_and_match_the_synthesizer(voice, demo_dir):
    summary = align(voice, "train", demo_dir / "alignments.jsonl", voice / "al.jsonl", progress=False)
    assert summary.aligned == 5 and not summary.failed
    ours = read_alignments(voice / "al.jsonl")  # the format label-quality and probe read
    exact = read_alignments(demo_dir / "alignments.jsonl")
    for line in (voice / "al.jsonl").read_text().splitlines():
        rec = json.loads(line)
        phones = rec["phones"]
        assert phones[0][1] == 0 and phones[-1][2] == pytest.approx(rec["duration"])
        assert all(a[2] == b[1] for a, b in zip(phones, phones[1:]))  # no gaps, no overlaps
        assert [w for w, _, _ in rec["words"]] == rec["text"].lower().split()
        # speech vs silence, frame by frame, against espeak-ng's exact timings: PocketSphinx's
        # 10 ms frames and silence model agree on 0.92-0.997 of frames for this voice
        n = int(rec["duration"] * 100)
        key = rec["utt"]
        agree = (np.array(frame_phones(ours[key], n, 100)) == "sil") == (np.array(frame_phones(exact[key], n, 100)) == "sil")
        assert agree.mean() > 0.85, (key, agree.mean())


def test_unknown_words_are_reported_or_taken_from_a_lexicon(voice, tmp_path):
    lines = (voice / "train.tsv").read_text().splitlines()[1:]
    texts = tmp_path / "texts.tsv"
    texts.write_text("".join(f"{l.split()[0]}\t{'ZORBLAX ' if i == 0 else ''}hello there\n" for i, l in enumerate(lines)))
    summary = align(voice, "train", texts, tmp_path / "al.jsonl", progress=False)
    first = lines[0].split()[0]
    assert summary.failed.get(first) == "words not in the dictionary: zorblax"
    assert first not in (tmp_path / "al.jsonl").read_text()
    (tmp_path / "lexicon.txt").write_text("ZORBLAX Z AO1 R B L AE2 K S\n")
    summary = align(voice, "train", texts, tmp_path / "al2.jsonl", lexicon=tmp_path / "lexicon.txt", progress=False)
    assert first not in summary.failed


def test_nothing_aligned_is_an_error_and_leaves_no_file(voice, tmp_path):
    lines = (voice / "train.tsv").read_text().splitlines()[1:]
    (tmp_path / "texts.tsv").write_text("".join(f"{l.split()[0]}\tqwxzv\n" for l in lines))
    with pytest.raises(HubertkitError, match="no utterance .* could be aligned"):
        align(voice, "train", tmp_path / "texts.tsv", tmp_path / "al.jsonl", progress=False)
    assert not list(tmp_path.glob("*al.jsonl*"))


@pytest.mark.parametrize("name,content,named", [
    ("texts.tsv", "f1/a\tcaf\xe9\n".encode("latin-1"), "texts.tsv:1 is not UTF-8"),
    ("texts.jsonl", b'{"utt": "f1/a", "text": 5}\n', "texts.jsonl:1: expected a JSON object .*'text' is 5"),
    ("texts.jsonl", b'{"utt": "f1/a", "text": null}\n', "texts.jsonl:1: .*'text' is None"),
    ("texts.jsonl", b'{"utt": 7, "text": "hi"}\n', "texts.jsonl:1: expected a JSON object"),
])
def test_transcripts_that_cannot_be_read_are_refused_naming_the_line(voice, tmp_path, name, content, named):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(HubertkitError, match=named):
        align(voice, "train", tmp_path / name, tmp_path / "al.jsonl", progress=False)
    assert not (tmp_path / "al.jsonl").exists()


@pytest.mark.parametrize("content,named", [
    ("HELLO HH AH0 L OW1\nZORBLAX Z QQ R B\n".encode(), r"lexicon.txt:2: QQ not among the aligner's phones"),
    ("ZORBLAX Z AO1 R B L \xc6 K S\n".encode("latin-1"), "lexicon .*lexicon.txt:1 is not UTF-8"),
])
def test_a_lexicon_the_aligner_cannot_use_is_refused_naming_the_line(voice, demo_dir, tmp_path, content, named):
    (tmp_path / "lexicon.txt").write_bytes(content)
    with pytest.raises(HubertkitError, match=named):
        align(voice, "train", demo_dir / "alignments.jsonl", tmp_path / "al.jsonl", lexicon=tmp_path / "lexicon.txt",
              progress=False)


def test_out_a_folder_is_refused_before_aligning(voice, demo_dir, tmp_path):
    with pytest.raises(HubertkitError, match="--out .* is a folder"):
        align(voice, "train", demo_dir / "alignments.jsonl", tmp_path, progress=False)
