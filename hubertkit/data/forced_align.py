"""Word and phone alignments of a transcribed corpus, made with PocketSphinx's English
acoustic model and CMU dictionary (``pip install 'hubertkit[align]'``, nothing to
download): the ``alignments.jsonl`` that ``label-quality`` and ``probe`` read, so label
quality can be measured on any transcribed English corpus.

Each utterance is aligned in two passes (words, then phones and their 10 ms frames). A
clip PocketSphinx cannot align as recorded is retried with its edge silence trimmed and
0.15 s of zeros on either side, which rescues most clips that start or end abruptly,
then so again with much wider search beams.
Utterances that still fail, or whose words are in neither the dictionary nor the
``lexicon``, are left out and reported with the reason.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hubertkit.data.audio import SAMPLE_RATE, read_audio
from hubertkit.data.manifest import lookup_by_path, manifest_path, read_manifest
from hubertkit.data.text import normalize_text, read_texts
from hubertkit.errors import HubertkitError
from hubertkit.fileio import atomic_open, read_utf8
from hubertkit.progress import progress_bar

log = logging.getLogger(__name__)

FRAME_S = 0.01  # PocketSphinx's frame shift
PAD_S = 0.15
SILENCE = "sil"  # as in the demo corpus; PocketSphinx's SIL and noise phones map to it


@dataclass
class AlignSummary:
    out: str
    aligned: int
    failed: dict[str, str] = field(default_factory=dict)  # utterance → why

    def __str__(self) -> str:
        text = f"wrote {self.out}: {self.aligned} utterances aligned"
        if self.failed:
            first = "; ".join(f"{u}: {why}" for u, why in list(self.failed.items())[:5])
            text += f", {len(self.failed)} left out ({first}{' ...' if len(self.failed) > 5 else ''})"
        return text


def _decoder(**beams):
    try:
        from pocketsphinx import Decoder, set_loglevel
    except ImportError:
        raise HubertkitError("hubertkit align needs PocketSphinx: pip install 'hubertkit[align]'") from None
    set_loglevel("FATAL")  # a failed alignment is reported here, with its utterance
    return Decoder(samprate=SAMPLE_RATE, bestpath=False, loglevel="FATAL", **beams)


# The last resort's beams: 1e-100 keeps paths the default 1e-48 prunes (slower, rarely needed).
WIDE_BEAMS = {"beam": 1e-100, "pbeam": 1e-100, "wbeam": 1e-80}


# the phones of PocketSphinx's US English acoustic model: the CMU dictionary's ARPAbet
ARPABET = frozenset("AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z "
                    "ZH".split())


def read_lexicon(path: str | os.PathLike) -> dict[str, str]:
    """``WORD PH1 PH2 ...`` lines (ARPAbet; stress digits are dropped, as the CMU
    dictionary of PocketSphinx has none)."""
    lexicon = {}
    for number, line in enumerate(read_utf8(path, "lexicon").splitlines(), start=1):
        parts = line.split()
        if len(parts) < 2:
            if parts:
                raise HubertkitError(f"{path}:{number}: expected 'WORD PHONE ...', got {line!r}")
            continue
        phones = [re.sub(r"\d", "", p).upper() for p in parts[1:]]
        unknown = sorted(set(phones) - ARPABET)
        if unknown:
            raise HubertkitError(f"{path}:{number}: {' '.join(unknown)} not among the aligner's phones (ARPAbet: "
                                 f"{' '.join(sorted(ARPABET))})")
        lexicon.setdefault(parts[0].lower(), " ".join(phones))
    return lexicon


def _phones_of(decoder, samples: np.ndarray, words: str, offset_s: float) -> list[list] | None:
    """``[[word, [[phone, start, end], ...]], ...]`` in seconds of the original clip, or
    None when PocketSphinx finds no alignment."""
    data = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    decoder.set_align_text(words)
    decoder.start_utt()
    decoder.process_raw(data, full_utt=True)
    decoder.end_utt()
    if decoder.hyp() is None:  # no path through the words (ask only now: hyp() crashes after the phone pass)
        return None
    decoder.set_alignment()
    decoder.start_utt()
    decoder.process_raw(data, full_utt=True)
    decoder.end_utt()
    alignment = decoder.get_alignment()
    if alignment is None:
        return None
    out = []
    for word in alignment:
        phones = [[p.name, round(p.start * FRAME_S - offset_s, 4), round((p.start + p.duration) * FRAME_S - offset_s, 4)]
                  for p in word]
        out.append([word.name, phones])
    return out


def _trim(samples: np.ndarray, threshold: float = 0.02) -> tuple[np.ndarray, float]:
    """Edge silence trimmed and PAD_S of zeros on both sides; the offset of the original's
    sample 0 in the result, in seconds (negative: samples were trimmed)."""
    loud = np.flatnonzero(np.abs(samples) > threshold * max(np.abs(samples).max(), 1e-9))
    a, b = (loud[0], loud[-1] + 1) if len(loud) else (0, len(samples))
    pad = np.zeros(int(PAD_S * SAMPLE_RATE), dtype=samples.dtype)
    return np.concatenate([pad, samples[a:b], pad]), PAD_S - a / SAMPLE_RATE


def _record(rel: str, text: str, duration: float, aligned: list[list]) -> dict:
    """The alignment as the corpus format: phones cover 0..duration without gaps, every
    pause ``sil``; words with their spans (pauses left out)."""
    phones, words = [], []
    for word, segs in aligned:
        for name, start, end in segs:
            name = SILENCE if name == "SIL" or name.startswith("+") else name
            start, end = max(0.0, min(start, duration)), max(0.0, min(end, duration))
            if end <= start:
                continue
            if phones and start > phones[-1][2]:  # a gap (trimmed edge): silence
                phones.append([SILENCE, phones[-1][2], start])
            elif not phones and start > 0:
                phones.append([SILENCE, 0.0, start])
            if phones and name == SILENCE and phones[-1][0] == SILENCE:
                phones[-1][2] = end
            else:
                phones.append([name, start, end])
        if not word.startswith("<") and not word.startswith("[") and segs:
            words.append([re.sub(r"\(\d+\)$", "", word), max(0.0, segs[0][1]), min(duration, segs[-1][2])])
    if phones and phones[-1][2] < duration:
        if phones[-1][0] == SILENCE:
            phones[-1][2] = round(duration, 4)
        else:
            phones.append([SILENCE, phones[-1][2], round(duration, 4)])
    return {"utt": os.path.splitext(rel)[0], "path": rel, "text": text, "duration": round(duration, 4),
            "words": words, "phones": phones}


def align(tsv_dir, split: str, texts, out, lexicon=None, progress: bool = True) -> AlignSummary:
    """``hubertkit align TSV_DIR SPLIT --texts F --out alignments.jsonl``: one JSON line per
    aligned utterance of ``{split}.tsv``, in manifest order, written atomically."""
    if Path(out).is_dir():
        raise HubertkitError(f"--out {out} is a folder; give the alignments file to write (e.g. {Path(out) / 'alignments.jsonl'})")
    manifest = read_manifest(manifest_path(tsv_dir, split))
    table = read_texts(texts)
    extra = read_lexicon(lexicon) if lexicon else {}
    decoder, wide = _decoder(), None
    added: set[str] = set()
    failed: dict[str, str] = {}
    n = 0
    with atomic_open(Path(out)) as f:
        for utt in progress_bar(manifest.utterances, unit="utt", desc=f"align {split}", disable=not progress):
            rel = utt.name
            text = normalize_text(lookup_by_path(table, rel, "transcript", str(texts)))
            words = text.lower().split()
            unknown = [w for w in words if decoder.lookup_word(w) is None and w not in added]
            for w in [w for w in unknown if w in extra]:
                decoder.add_word(w, extra[w], True)
                if wide is not None:
                    wide.add_word(w, extra[w], True)
                added.add(w)
            unknown = [w for w in unknown if w not in extra]
            if not words or unknown:
                failed[rel] = f"words not in the dictionary: {' '.join(sorted(set(unknown)))}" if unknown else "empty transcript"
                continue
            samples = read_audio(utt, where=str(manifest.path))
            aligned = _phones_of(decoder, samples, " ".join(words), 0.0)
            if aligned is None:
                padded, offset = _trim(samples)
                aligned = _phones_of(decoder, padded, " ".join(words), offset)
                if aligned is None:
                    if wide is None:
                        wide = _decoder(**WIDE_BEAMS)
                        for w in added:
                            wide.add_word(w, extra[w], True)
                    aligned = _phones_of(wide, padded, " ".join(words), offset)
            if aligned is None:
                failed[rel] = "PocketSphinx found no alignment (as recorded, trimmed and padded, with wide beams)"
                continue
            f.write(json.dumps(_record(rel, text, len(samples) / SAMPLE_RATE, aligned)) + "\n")
            n += 1
        if n == 0:  # raised inside: no empty file is left behind
            raise HubertkitError(f"no utterance of {manifest.path} could be aligned (first: {next(iter(failed.items()), '')})")
    for rel, why in failed.items():
        log.warning("not aligned: %s: %s", rel, why)
    return AlignSummary(str(out), n, failed)
