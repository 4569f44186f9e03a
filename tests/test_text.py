import pytest

from hubertkit.data.labels import read_dict
from hubertkit.data.text import letters, normalize_text, prepare_text
from hubertkit.errors import HubertkitError


def test_letters_follow_libri_labels():
    # examples/wav2vec/libri_labels.py: " ".join(list(words.replace(" ", "|"))) + " |"
    for words in ("HELLO WORLD", "A", "IT'S OK"):
        assert letters(words) == " ".join(list(words.replace(" ", "|"))) + " |"


def test_normalize_text():
    assert normalize_text("The soft cushion broke the man's fall.") == "THE SOFT CUSHION BROKE THE MAN'S FALL"
    assert normalize_text("  well-known,  3 times ") == "WELL KNOWN TIMES"


def test_prepare_text_from_jsonl(prepared, demo_dir, tmp_path):
    counts = prepare_text(prepared / "tsv", ["train", "valid"], tmp_path, demo_dir / "alignments.jsonl")
    train_rows = (prepared / "tsv" / "train.tsv").read_text().splitlines()[1:]
    assert counts["train"] == len(train_rows)
    wrd = (tmp_path / "train.wrd").read_text().splitlines()
    ltr = (tmp_path / "train.ltr").read_text().splitlines()
    assert [letters(w) for w in wrd] == ltr
    symbols = read_dict(tmp_path / "dict.ltr.txt")
    assert "|" in symbols and "E" in symbols and all(len(s) == 1 for s in symbols)
    freq = [int(l.split()[1]) for l in (tmp_path / "dict.ltr.txt").read_text().splitlines()]
    assert freq == sorted(freq, reverse=True)


def test_prepare_text_from_librispeech_trans_files(tmp_path):
    import numpy as np
    import soundfile as sf

    from hubertkit.data.manifest import make_manifest

    chapter = tmp_path / "corpus" / "103" / "1240"
    chapter.mkdir(parents=True)
    for i in range(3):
        sf.write(chapter / f"103-1240-000{i}.flac", np.zeros(8000, dtype=np.float32), 16000)
    (chapter / "103-1240.trans.txt").write_text("103-1240-0000 CHAPTER ONE\n103-1240-0001 MISSUS RACHEL\n103-1240-0002 LYNDE\n")
    make_manifest(tmp_path / "corpus", tmp_path / "tsv", valid_percent=0)
    prepare_text(tmp_path / "tsv", ["train"])
    assert sorted((tmp_path / "tsv" / "train.wrd").read_text().splitlines()) == ["CHAPTER ONE", "LYNDE", "MISSUS RACHEL"]
    (chapter / "103-1240.trans.txt").write_text("103-1240-0000 ONLY ONE\n")
    with pytest.raises(HubertkitError, match="no transcript for"):
        prepare_text(tmp_path / "tsv", ["train"])


def test_dict_covers_letters_only_valid_uses(tmp_path):
    """A valid transcript's apostrophe (absent from train) must not make fine-tuning refuse it."""
    import numpy as np
    import soundfile as sf

    for split, name in (("train", "a"), ("valid", "b")):
        sf.write(tmp_path / f"{name}.flac", np.zeros(8000, dtype=np.float32), 16000)
        (tmp_path / f"{split}.tsv").write_text(f"{tmp_path}\n{name}.flac\t8000\n")
    (tmp_path / "texts.tsv").write_text("a\tSEE THE SEA\nb\tIT'S QUIET\n")
    prepare_text(tmp_path, ["train", "valid"], tmp_path / "out", tmp_path / "texts.tsv")
    symbols = read_dict(tmp_path / "out" / "dict.ltr.txt")
    # train's letters by count (E 4, | 3, S 2, then ties by name), then the letters only valid uses
    assert symbols == ["E", "|", "S", "A", "H", "T", "I", "'", "Q", "U"]
    assert set((tmp_path / "out" / "valid.ltr").read_text().split()) <= set(symbols)
