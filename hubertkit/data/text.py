"""Transcripts for CTC fine-tuning, in fairseq's files: ``{split}.wrd`` (the words),
``{split}.ltr`` (letters separated by spaces, ``|`` after every word, as
``examples/wav2vec/libri_labels.py`` writes them) and ``dict.ltr.txt`` (the letters of
the first split by frequency, then any letter only the other splits use, so that no
valid transcript holds a letter the model cannot write).

Texts come from LibriSpeech's ``*.trans.txt`` beside the audio, or from a file:
``utterance<TAB>text`` lines, or JSON lines with ``path`` (or ``utt``) and ``text`` (the
demo corpus's ``alignments.jsonl``). They are normalised as LibriSpeech's are: upper
case, letters and apostrophes, single spaces.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

from hubertkit.data.labels import dict_path, label_path
from hubertkit.data.manifest import lookup_by_path, manifest_path, read_manifest
from hubertkit.errors import HubertkitError
from hubertkit.fileio import read_utf8, write_text

WORD_BOUNDARY = "|"


def normalize_text(text: str) -> str:
    """Upper case; anything but letters and apostrophes separates words."""
    return " ".join(re.sub(r"[^\w']|[\d_]", " ", text.upper()).split())


def letters(words: str) -> str:
    """``HI THERE`` → ``H I | T H E R E |``."""
    return " ".join(words.replace(" ", WORD_BOUNDARY)) + f" {WORD_BOUNDARY}"


def letter_counts(texts: list[str]) -> list[tuple[str, int]]:
    """The letters of normalised texts (``|`` included) by frequency, most frequent
    first: the order and counts of ``dict.ltr.txt``."""
    counts = Counter(c for t in texts for c in letters(t).split())
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def read_texts(path: str | os.PathLike) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise HubertkitError(f"transcript file {path} does not exist")
    table = {}
    for n, line in enumerate(read_utf8(path, "transcript file").splitlines(), start=1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                record = json.loads(line)
                key, text = os.path.splitext(record.get("path") or record["utt"])[0], record["text"]
                if not isinstance(text, str):
                    raise TypeError(f"'text' is {text!r}, not a string")
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
                raise HubertkitError(f"{path}:{n}: expected a JSON object with 'path' (or 'utt') and 'text': {e}") from None
        else:
            key, _, text = line.partition("\t")
            if not _:
                raise HubertkitError(f"{path}:{n}: expected 'utterance<TAB>text', got {line!r}")
        table[key.strip()] = text
    return table


def _librispeech_texts(audio: Path, cache: dict) -> dict[str, str]:
    """The ``speaker-chapter.trans.txt`` of the audio's directory (``ID WORDS...`` lines)."""
    folder = audio.parent
    if folder not in cache:
        found = sorted(folder.glob("*.trans.txt"))
        if not found:
            raise HubertkitError(f"no *.trans.txt beside {audio}: give the transcripts with --texts")
        cache[folder] = {l.split(" ", 1)[0]: l.split(" ", 1)[1] if " " in l else "" for f in found
                         for l in f.read_text().splitlines() if l.strip()}
    return cache[folder]


def prepare_text(tsv_dir, splits: list[str], out_dir=None, texts: str | os.PathLike | None = None) -> dict[str, int]:
    """Write ``{split}.wrd``, ``{split}.ltr`` (in manifest order) and ``dict.ltr.txt``
    into ``out_dir`` (default: ``tsv_dir``). Returns utterances per split."""
    out = Path(out_dir or tsv_dir)
    table = read_texts(texts) if texts else None
    cache: dict = {}
    written, texts_per_split = {}, []
    for split in splits:
        manifest = read_manifest(manifest_path(tsv_dir, split))
        words = []
        for utt in manifest.utterances:
            rel = utt.name
            if table is not None:
                raw = lookup_by_path(table, rel, "transcript", str(texts))
            else:
                raw = lookup_by_path(_librispeech_texts(Path(utt.path), cache), Path(rel).name, "transcript", str(utt.path))
            words.append(normalize_text(raw))
        texts_per_split.append(words)
        write_text(label_path(out, split, "wrd"), "".join(f"{w}\n" for w in words))
        write_text(label_path(out, split, "ltr"), "".join(f"{letters(w)}\n" for w in words))
        written[split] = len(words)
    first = letter_counts(texts_per_split[0])
    known = {c for c, _ in first}
    rest = [(c, n) for c, n in letter_counts([w for words in texts_per_split[1:] for w in words]) if c not in known]
    write_text(dict_path(out, "ltr"), "".join(f"{c} {n}\n" for c, n in first + rest))
    return written
