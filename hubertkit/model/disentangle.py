"""The disentangling variant's heads (DESIGN.md): a speaker adversary behind a
gradient-reversal layer, and a pitch output.

The adversary's classifier learns to name the speaker from one layer's pooled output
while the reversed gradient teaches the encoder below it to hide the speaker; the pitch
head keeps F0 recoverable so the prosody the adversary pushes out of that layer has a
place to go. Both read intermediate layers of :class:`~hubertkit.model.hubert.HubertModel`,
which owns them when ``model.speaker_layer`` or ``model.pitch_layer`` is set.
"""

from __future__ import annotations

import torch
from torch import nn

from hubertkit.model.gradient import scale_gradient


def reverse_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity forward; the backward pass multiplies the gradient by ``-scale``."""
    return scale_gradient(x, -scale)


def grl_scale(num_updates: int, scale: float, warmup_updates: int) -> float:
    """The reversal strength: a linear ramp from 0 to ``scale`` over the warm-up, so the
    adversary learns to classify before the encoder starts fighting it (Ganin et al.
    2016 use a smooth ramp for the same reason)."""
    if warmup_updates <= 0:
        return scale
    return scale * min(1.0, num_updates / warmup_updates)


class SpeakerAdversary(nn.Module):
    """Gradient reversal → mean over unpadded frames → two-layer classifier."""

    def __init__(self, dim: int, num_speakers: int):
        super().__init__()
        self.classifier = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, num_speakers))

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None, scale: float) -> torch.Tensor:
        x = reverse_gradient(x, scale)
        if padding_mask is None:
            pooled = x.mean(1)
        else:
            keep = (~padding_mask).unsqueeze(-1).to(x.dtype)
            pooled = (x * keep).sum(1) / keep.sum(1).clamp(min=1)
        return self.classifier(pooled).float()


class PitchHead(nn.Module):
    """Per frame: predicted log-F0 and a voicing logit."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).float()
