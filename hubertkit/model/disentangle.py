"""The disentangling variant's heads (DESIGN.md): a speaker adversary behind a
gradient-reversal layer, and a pitch output.

The adversary's classifier learns to name the speaker from one layer's pooled output
while the reversed gradient teaches the encoder below it to hide the speaker; the pitch
head keeps F0 recoverable so the prosody the adversary pushes out of that layer has a
place to go. Both read intermediate layers of HuBERT: :class:`DisentangledHubert` is
:class:`~hubertkit.model.hubert.HubertModel` with the heads added, so its HuBERT weights
keep their names and every reader of HuBERT reads it; ``build_hubert`` picks the class
from the config.
"""

from __future__ import annotations

import torch
from torch import nn

from hubertkit.config.model import HubertConfig
from hubertkit.errors import HubertkitError
from hubertkit.model.gradient import scale_gradient
from hubertkit.model.hubert import HubertModel, init_bert_params


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


class DisentangledHubert(HubertModel):
    """HuBERT plus the heads ``model.speaker_layer`` and ``model.pitch_layer`` configure.
    Its forward adds ``speaker_logits`` [batch, speakers] and ``pitch_pred``
    [batch, frames, 2] to HuBERT's outputs."""

    HEADS = True

    def __init__(self, cfg: HubertConfig):
        super().__init__(cfg)
        if cfg.speaker_layer and cfg.num_speakers < 2:
            raise HubertkitError(f"model.speaker_layer needs at least 2 speakers (dict.spk.txt), got {cfg.num_speakers}")
        # The heads draw their initial weights from a forked RNG: a model with them starts
        # with the same HuBERT weights and dropout stream as one without.
        d = cfg.encoder_embed_dim
        with torch.random.fork_rng(devices=[]):
            self.speaker_adversary = SpeakerAdversary(d, cfg.num_speakers) if cfg.speaker_layer else None
            self.pitch_head = PitchHead(d) if cfg.pitch_layer else None
            for head in (self.speaker_adversary, self.pitch_head):
                if head is not None:
                    head.apply(init_bert_params)

    def forward(self, wav: torch.Tensor, targets: list[torch.Tensor] | None = None, padding_mask: torch.Tensor | None = None,
                mask: bool = True, generator: torch.Generator | None = None, num_updates: int = 0, masks=None) -> dict:
        """HuBERT's forward, plus the heads' outputs; ``num_updates`` (completed updates)
        sets the gradient-reversal warm-up."""
        out = super().forward(wav, targets, padding_mask, mask, generator, num_updates, all_layers=True, masks=masks)
        layers = out.pop("layers")
        if self.speaker_adversary is not None:
            scale = grl_scale(num_updates, self.cfg.grl_scale, self.cfg.grl_warmup_updates)
            out["speaker_logits"] = self.speaker_adversary(layers[self.cfg.speaker_layer], out["padding_mask"], scale)
        if self.pitch_head is not None:
            out["pitch_pred"] = self.pitch_head(layers[self.cfg.pitch_layer])
        return out


def build_hubert(cfg: HubertConfig) -> HubertModel:
    """The model a config describes: :class:`DisentangledHubert` when it sets a head's
    layer, else plain :class:`HubertModel`."""
    return DisentangledHubert(cfg) if cfg.speaker_layer or cfg.pitch_layer else HubertModel(cfg)
