"""Batches by total audio samples (fairseq's ``max_tokens``), length-sorted, shuffled per epoch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hubertkit.errors import HubertkitError


class Batches(Sequence):
    """Batch ``k`` is ``order[bounds[k]:bounds[k + 1]]``: two arrays instead of a list
    per batch, so that ten million utterances cost 16 bytes each."""

    def __init__(self, order: np.ndarray, bounds: np.ndarray):
        self.order, self.bounds = order, bounds

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[j] for j in range(len(self))[k]]
        if not -len(self) <= k < len(self):
            raise IndexError(k)
        k %= len(self)
        return self.order[self.bounds[k] : self.bounds[k + 1]]

    def tolist(self) -> list[list[int]]:
        return [b.tolist() for b in self]

    def permuted(self, perm: np.ndarray) -> Batches:
        """The batches in the order ``perm``."""
        counts = np.diff(self.bounds)[perm]
        bounds = np.concatenate([[0], np.cumsum(counts)])
        within = np.arange(bounds[-1]) - np.repeat(bounds[:-1], counts)
        return Batches(self.order[np.repeat(self.bounds[:-1][perm], counts) + within], bounds)


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
    batches = Batches(np.ascontiguousarray(order), np.asarray(bounds, dtype=np.int64))
    return batches.permuted(rng.permutation(len(batches))) if shuffle else batches
