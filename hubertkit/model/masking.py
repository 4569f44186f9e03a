"""Span masking with the semantics of fairseq's ``compute_mask_indices`` (static spans),
and the masks of a batch drawn from its shapes alone (``batch_masks``), so that a
DataLoader worker can draw them off the training step's path.

Per row of unpadded length ``sz``: ``num = max(min_masks, int(mask_prob · sz / span +
u))`` with ``u ~ U[0, 1)``; span starts drawn without replacement from
``[0, sz − span)``; spans cut at ``sz``; then every row keeps the same number of
masked frames (the smallest row's count), as ``require_same_masks`` does, so masked
frames can be gathered into a dense batch.
"""

from __future__ import annotations

import torch

from hubertkit.config.model import HubertConfig
from hubertkit.data.audio import SAMPLE_RATE


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


def frame_padding(padding_mask: torch.Tensor, frames: int) -> torch.Tensor:
    """The ``[batch, frames]`` padding of ``frames`` feature frames from the samples'
    padding: a frame is padding when every sample it groups is (fairseq's rule)."""
    extra = padding_mask.shape[1] % frames
    if extra:
        padding_mask = padding_mask[:, :-extra]
    return padding_mask.view(padding_mask.shape[0], frames, -1).all(-1)


def feat2tar_ratio(cfg: HubertConfig) -> float:
    """Label frames per feature frame: 2 for 100 Hz labels, 1 for 50 Hz."""
    return cfg.label_rate * cfg.downsample / SAMPLE_RATE


def labelled_frames(cfg: HubertConfig, frames: int, label_frames: int) -> int:
    """How many of ``frames`` feature frames have a label, when the labels have
    ``label_frames`` frames (fairseq's crop of the features to the labels)."""
    ratio = feat2tar_ratio(cfg)
    return int(label_frames / ratio) if ratio * frames > label_frames else frames


def draw_masks(cfg: HubertConfig, batch: int, frames: int, padding: torch.Tensor | None,
               generator: torch.Generator | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """A masked forward's time mask ``[batch, frames]`` (at least 2 spans a row, none in
    ``padding``) and channel mask ``[batch, channels]``, in that order from ``generator``;
    None where the probability is 0."""
    time = channels = None
    if cfg.mask_prob > 0:
        time = compute_mask((batch, frames), padding, cfg.mask_prob, cfg.mask_length, min_masks=2, generator=generator)
    if cfg.mask_channel_prob > 0:
        channels = compute_mask((batch, cfg.encoder_embed_dim), None, cfg.mask_channel_prob, cfg.mask_channel_length,
                                generator=generator)
    return time, channels


def batch_masks(cfg: HubertConfig, source: torch.Tensor, padding_mask: torch.Tensor | None, label_frames: int,
                generator: torch.Generator) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The masks ``HubertModel.forward`` would draw with ``generator`` for this batch
    (waveforms ``source``, labels of ``label_frames`` frames), from the shapes alone."""
    frames = labelled_frames(cfg, cfg.frames(source.shape[1]), label_frames)
    padding = None if padding_mask is None else frame_padding(padding_mask, frames)
    return draw_masks(cfg, source.shape[0], frames, padding, generator)
