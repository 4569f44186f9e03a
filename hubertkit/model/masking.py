"""Span masking with the semantics of fairseq's ``compute_mask_indices`` (static spans).

Per row of unpadded length ``sz``: ``num = max(min_masks, int(mask_prob · sz / span +
u))`` with ``u ~ U[0, 1)``; span starts drawn without replacement from
``[0, sz − span)``; spans cut at ``sz``; then every row keeps the same number of
masked frames (the smallest row's count), as ``require_same_masks`` does, so masked
frames can be gathered into a dense batch.
"""

from __future__ import annotations

import torch


def compute_mask(
    shape: tuple[int, int],
    padding_mask: torch.Tensor | None,
    mask_prob: float,
    mask_length: int,
    min_masks: int = 0,
    generator: torch.Generator | None = None,
    require_same_masks: bool = True,
) -> torch.Tensor:
    """Boolean ``[batch, time]`` mask (on the CPU)."""
    batch, total = shape
    lengths = [total] * batch
    if padding_mask is not None:
        lengths = (total - padding_mask.long().sum(-1)).tolist()
    rows = []
    for sz in lengths:
        num = int(mask_prob * sz / float(mask_length) + torch.rand((), generator=generator).item())
        num = max(min_masks, num)
        span = mask_length
        if sz - span <= num:  # short rows: start anywhere, fairseq's `min_len` adjustment
            span = sz - num - 1
        if num == 0 or sz - span <= 0:
            rows.append(torch.zeros(0, dtype=torch.long))
            continue
        starts = torch.randperm(sz - span, generator=generator)[:num]
        idx = (starts[:, None] + torch.arange(mask_length)[None, :]).flatten()
        rows.append(torch.unique(idx[idx < sz]))
    mask = torch.zeros(batch, total, dtype=torch.bool)
    target = min(len(r) for r in rows) if require_same_masks and rows else None
    for i, idx in enumerate(rows):
        if target is not None and len(idx) > target:
            idx = idx[torch.randperm(len(idx), generator=generator)[:target]]
        mask[i, idx] = True
    return mask
