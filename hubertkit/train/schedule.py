"""fairseq's ``polynomial_decay`` learning-rate schedule."""

from __future__ import annotations


def polynomial_decay(num_updates: int, lr: float, warmup: int, total: int, end_lr: float = 0.0, power: float = 1.0) -> float:
    """Learning rate for the update after ``num_updates`` completed ones: linear warm-up
    to ``lr`` over ``warmup`` updates (``lr / warmup`` for the very first), then a
    polynomial decay to ``end_lr`` at ``total``."""
    if warmup > 0 and num_updates <= warmup:
        return lr * max(num_updates, 1) / warmup
    if num_updates >= total:
        return end_lr
    remaining = 1 - (num_updates - warmup) / (total - warmup)
    return (lr - end_lr) * remaining**power + end_lr
