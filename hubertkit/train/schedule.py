"""fairseq's learning-rate schedules: ``polynomial_decay`` (pretraining) and ``tri_stage``
(fine-tuning), chosen by ``lr_scheduler._name``."""

from __future__ import annotations

import math

from hubertkit.config import TrainConfig


def learning_rate(cfg: TrainConfig, num_updates: int) -> float:
    """The configured schedule's rate for the update after ``num_updates`` completed ones."""
    s, peak = cfg.lr_scheduler, cfg.optimization.lr[0]
    if s._name == "tri_stage":
        steps = [s.warmup_steps, s.hold_steps, s.decay_steps]
        if s.phase_ratio:  # fractions of max_update, as fairseq
            steps = [int(r * cfg.optimization.max_update) for r in s.phase_ratio]
        return tri_stage(num_updates, peak, *steps, s.init_lr_scale, s.final_lr_scale)
    return polynomial_decay(num_updates, peak, s.warmup_updates, int(s.total_num_update), s.end_learning_rate, s.power)


def polynomial_decay(num_updates: int, lr: float, warmup: int, total: int, end_lr: float = 0.0, power: float = 1.0) -> float:
    """Learning rate for the update after ``num_updates`` completed ones: linear warm-up
    to ``lr`` over ``warmup`` updates, then a polynomial decay to ``end_lr`` at ``total``.
    With a warm-up the very first update has learning rate 0, as in fairseq (its trainer
    sets the rate for update 0 before the first step), so it moves no weight."""
    if warmup > 0 and num_updates <= warmup:
        return lr * num_updates / warmup
    if num_updates >= total:
        return end_lr
    remaining = 1 - (num_updates - warmup) / (total - warmup)
    return (lr - end_lr) * remaining**power + end_lr


def tri_stage(num_updates: int, lr: float, warmup: int, hold: int, decay: int,
              init_scale: float = 0.01, final_scale: float = 0.01) -> float:
    """Linear warm-up from ``init_scale · lr`` to ``lr``, a hold at ``lr``, then an
    exponential decay to ``final_scale · lr`` over ``decay`` updates, and that floor after."""
    if num_updates < warmup:
        return lr * init_scale + (lr - lr * init_scale) * num_updates / warmup
    step = num_updates - warmup
    if step < hold:
        return lr
    step -= hold
    if step <= decay:
        return lr * math.exp(math.log(final_scale) * step / decay) if decay else lr * final_scale
    return lr * final_scale
