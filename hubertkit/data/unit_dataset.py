"""Unit sequences with their transcripts, for unit-based ASR.

Units are ``hubertkit units`` JSON lines (``utt``, ``units`` and, when written with
``--dedup``, ``durations``); transcripts are any file ``read_texts`` reads, matched by
utterance path. As in the recipe's unit ASR, runs of repeated units are collapsed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from hubertkit.data.manifest import lookup_by_path
from hubertkit.data.text import letter_counts, normalize_text, read_texts
from hubertkit.data.unit_vocab import EOS, PAD, UnitVocab, dedup
from hubertkit.errors import HubertkitError


def read_units(path: str | os.PathLike) -> list[dict]:
    """``[{"utt", "units" (repeats collapsed), "frames"}]`` of a units JSONL file."""
    path = Path(path)
    if not path.is_file():
        raise HubertkitError(f"units file {path} does not exist (write it with hubertkit units)")
    out = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            units = [int(u) for u in r["units"]]
            utt = str(r["utt"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise HubertkitError(f"{path}:{n}: expected a JSON object with 'utt' and a list of integer 'units': {e}") from None
        if not units:
            raise HubertkitError(f"{path}:{n}: utterance {utt} has no units")
        frames = int(sum(r["durations"])) if "durations" in r else len(units)
        out.append({"utt": utt, "units": dedup(units)[0], "frames": frames})
    if not out:
        raise HubertkitError(f"{path} holds no utterances")
    return out


class UnitTextDataset(torch.utils.data.Dataset):
    """Item ``i``: ``{"id", "source": unit token ids, "target": letter ids + </s>}``.

    ``vocab`` None builds it from these transcripts and units (the train split);
    a valid split takes the train split's. ``samples_per_frame`` (audio samples per
    unit frame: 320 for 50 Hz units of 16 kHz audio) only feeds the trainer's
    audio-hours count."""

    def __init__(self, units_path: str | os.PathLike, texts_path: str | os.PathLike, vocab: UnitVocab | None = None,
                 num_units: int | None = None, samples_per_frame: int = 320):
        records = read_units(units_path)
        table = read_texts(texts_path)
        words = [normalize_text(lookup_by_path(table, r["utt"], "transcript", str(texts_path))) for r in records]
        if vocab is None:
            highest = max(max(r["units"]) for r in records)
            if num_units is not None and highest >= num_units:
                raise HubertkitError(f"{units_path}: unit id {highest} but task.num_units={num_units}")
            vocab = UnitVocab(tuple(c for c, _ in letter_counts(words)), num_units or highest + 1)
        self.vocab = vocab
        self.ids = [r["utt"] for r in records]
        self.sources = [torch.tensor(vocab.encode_units(r["units"], f"{units_path} ({r['utt']})")) for r in records]
        self.targets = [torch.tensor(vocab.encode_text(w, f"{texts_path} ({r['utt']})") + [EOS]) for w, r in zip(words, records)]
        self.frames = np.array([r["frames"] for r in records])
        self.samples_per_frame = samples_per_frame
        self.sizes = np.array([len(s) for s in self.sources])

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> dict:
        return {"id": i, "source": self.sources[i], "target": self.targets[i]}

    @property
    def num_tokens(self) -> np.ndarray:
        return self.sizes

    def collate(self, items: list[dict], generator: np.random.Generator | None = None) -> dict:
        def pad(seqs: list[torch.Tensor]) -> torch.Tensor:
            return torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=PAD)

        source = pad([it["source"] for it in items])
        return {"id": torch.tensor([it["id"] for it in items]), "source": source, "padding_mask": source == PAD,
                "target": pad([it["target"] for it in items]),
                "target_lengths": torch.tensor([len(it["target"]) for it in items]),
                "samples": int(sum(self.frames[it["id"]] for it in items)) * self.samples_per_frame}
