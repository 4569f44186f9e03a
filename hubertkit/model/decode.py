"""Greedy CTC decoding: the best class per frame, repeats merged, blanks dropped, and
``|`` read as the space between words (fairseq's letter targets)."""

from __future__ import annotations

import torch

from hubertkit.data.dictionary import SPECIALS
from hubertkit.data.text import WORD_BOUNDARY
from hubertkit.model.ctc import BLANK


def greedy_ids(log_probs: torch.Tensor, length: int | None = None) -> list[int]:
    """Class ids of one utterance's ``[frames, classes]`` scores after CTC collapsing."""
    best = log_probs[:length].argmax(-1)
    keep = torch.ones_like(best, dtype=torch.bool)
    keep[1:] = best[1:] != best[:-1]
    return [i for i in best[keep].tolist() if i != BLANK]


def ids_to_text(ids: list[int], vocab: list[str]) -> str:
    """Letters (specials other than the blank dropped), ``|`` → space, spaces tidied."""
    letters = [vocab[i] for i in ids if i >= len(SPECIALS)]
    return " ".join("".join(letters).replace(WORD_BOUNDARY, " ").split())
