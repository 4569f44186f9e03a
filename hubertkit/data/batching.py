"""Batches by total audio samples (fairseq's ``max_tokens``), length-sorted, shuffled per epoch."""

from __future__ import annotations

import numpy as np

from hubertkit.errors import HubertkitError


def batches_by_size(
    num_tokens: np.ndarray,
    max_tokens: int | None,
    batch_size: int | None = None,
    seed: int = 0,
    epoch: int = 1,
    shuffle: bool = True,
) -> list[list[int]]:
    """Items sorted by length (longest first, ties in random order), grouped so that
    ``len(batch) · longest ≤ max_tokens`` (and ``≤ batch_size`` items); the batch order
    is shuffled. The same ``(seed, epoch)`` gives the same batches, which is what lets a
    resumed run continue exactly where it stopped."""
    if not max_tokens and not batch_size:
        raise HubertkitError("set dataset.max_tokens or dataset.batch_size")
    rng = np.random.default_rng([seed, epoch])
    n = len(num_tokens)
    ties = rng.permutation(n) if shuffle else np.arange(n)
    order = np.lexsort((ties, num_tokens))[::-1]
    if max_tokens and num_tokens.max() > max_tokens:
        raise HubertkitError(
            f"an utterance needs {int(num_tokens.max())} samples but dataset.max_tokens={max_tokens}; "
            "raise max_tokens or lower task.max_sample_size"
        )
    batches, current, longest = [], [], 0
    for i in order.tolist():
        size = int(num_tokens[i])
        grown = max(longest, size) * (len(current) + 1)
        if current and ((max_tokens and grown > max_tokens) or (batch_size and len(current) >= batch_size)):
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, size)
    if current:
        batches.append(current)
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches
