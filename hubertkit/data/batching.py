"""Batches by total audio samples (fairseq's ``max_tokens``), length-sorted, shuffled per epoch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hubertkit.errors import HubertkitError


class Batches(Sequence):
    """Batch ``k`` is ``order[bounds[j]:bounds[j + 1]]`` with ``j = perm[k]``: arrays
    instead of a list per batch, so that ten million utterances cost 8 bytes each, and
    shuffling the batches moves one number per batch."""

    def __init__(self, order: np.ndarray, bounds: np.ndarray, perm: np.ndarray | None = None):
        self.order, self.bounds = order, bounds
        self.perm = np.arange(len(bounds) - 1) if perm is None else perm

    def __len__(self) -> int:
        return len(self.perm)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[j] for j in range(len(self))[k]]
        j = self.perm[k]
        return self.order[self.bounds[j] : self.bounds[j + 1]]

    def tolist(self) -> list[list[int]]:
        return [b.tolist() for b in self]


def batches_by_size(
    num_tokens: np.ndarray,
    max_tokens: int | None,
    batch_size: int | None = None,
    seed: int = 0,
    epoch: int = 1,
    shuffle: bool = True,
) -> Batches:
    """Items sorted by length (longest first, ties in random order), grouped so that
    ``len(batch) · longest ≤ max_tokens`` (and ``≤ batch_size`` items); the batch order
    is shuffled. The same ``(seed, epoch)`` gives the same batches, which is what lets a
    resumed run continue exactly where it stopped.

    Longest first means a batch's first item is its longest, so each batch's size is
    known from its first item: the loop runs once per batch, not per item."""
    if not max_tokens and not batch_size:
        raise HubertkitError("set dataset.max_tokens or dataset.batch_size")
    num_tokens = np.asarray(num_tokens)
    rng = np.random.default_rng([seed, epoch])
    n = len(num_tokens)
    ties = rng.permutation(n) if shuffle else np.arange(n)
    order = np.lexsort((ties, num_tokens))[::-1]
    if max_tokens and num_tokens.max() > max_tokens:
        raise HubertkitError(
            f"an utterance needs {int(num_tokens.max())} samples but dataset.max_tokens={max_tokens}; "
            "raise max_tokens or lower task.max_sample_size"
        )
    fits = np.full(n, batch_size or n, dtype=np.int64)  # items a batch starting at each position may hold
    if max_tokens:
        fits = np.minimum(fits, max_tokens // np.maximum(num_tokens[order], 1))
    fits = np.maximum(fits, 1)
    bounds, start = [0], 0
    while start < n:
        start = min(start + int(fits[start]), n)
        bounds.append(start)
    return Batches(order, np.asarray(bounds, dtype=np.int64), rng.permutation(len(bounds) - 1) if shuffle else None)
