"""HuBERT's pretraining loss, as fairseq's ``hubert_criterion.py`` computes it."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class CriterionConfig:
    """``criterion.*`` keys (defaults of ``hubert_base_librispeech.yaml``)."""

    pred_masked_weight: float = 1.0
    pred_nomask_weight: float = 0.0
    loss_weights: list[float] = field(default_factory=lambda: [10.0])  # feature penalty
    # disentangling variant: weights of the speaker adversary's cross-entropy and of the
    # pitch output's L1(log F0) + voicing BCE, each per utterance / frame (0: HuBERT exactly)
    speaker_loss_weight: float = 0.0
    pitch_loss_weight: float = 0.0


def hubert_loss(
    out: dict, cfg: CriterionConfig = CriterionConfig(), speaker: torch.Tensor | None = None, pitch: torch.Tensor | None = None
) -> tuple[torch.Tensor, int, dict]:
    """Summed cross-entropy of masked (and, if weighted, unmasked) frames over all label
    sets, plus ``loss_weights[0] · features_pen · sample_size``, plus the disentangling
    heads' mean losses times their weights and ``sample_size`` (when the model has them).

    Returns the loss (a sum: divide by ``sample_size`` for a per-frame value), the
    sample size (frames scored) and float/int statistics for logging.
    """
    loss = torch.zeros((), device=out["x"].device)
    sample_size = 0
    log: dict = {}
    for kind, weight in (("m", cfg.pred_masked_weight), ("u", cfg.pred_nomask_weight)):
        logits, targets = out.get(f"logit_{kind}_list", []), out.get(f"target_{kind}_list", [])
        terms = []
        for i, (lg, t) in enumerate(zip(logits, targets)):
            ce = F.cross_entropy(lg, t.long(), reduction="sum")
            terms.append(ce)
            log[f"loss_{kind}_{i}"] = ce.item()
            with torch.no_grad():
                log[f"correct_{kind}_{i}"] = int((lg.argmax(-1) == t).sum()) if lg.numel() else 0
                log[f"count_{kind}_{i}"] = int(t.numel())
        if weight > 0 and terms:
            loss = loss + weight * sum(terms)
            sample_size += targets[0].numel()
    if cfg.loss_weights and cfg.loss_weights[0] != 0:
        pen = cfg.loss_weights[0] * out["features_pen"].float() * sample_size
        loss = loss + pen
        log["loss_features_pen"] = pen.item()
    if "speaker_logits" in out:
        loss = loss + cfg.speaker_loss_weight * sample_size * _speaker_loss(out["speaker_logits"], speaker, log)
    if "pitch_pred" in out:
        loss = loss + cfg.pitch_loss_weight * sample_size * _pitch_loss(out["pitch_pred"], pitch, out["padding_mask"], log)
    log["loss"] = loss.item()
    log["sample_size"] = sample_size
    return loss, sample_size, log


def within_utterance_variance(x: torch.Tensor, padding_mask: torch.Tensor | None) -> tuple[float, float]:
    """Squared deviations of ``x``'s frames ``[batch, frames, dim]`` from their
    utterance's mean, and from the batch's mean. Their ratio is the share of the
    variance that changes within utterances: near 1 in healthy models, near 0 when the
    output has collapsed to one vector per utterance (docs/iteration_gain.md)."""
    x = x.detach().float()
    valid = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if padding_mask is None else ~padding_mask
    w = valid[..., None].float()
    counts = w.sum(1).clamp(min=1)
    utt_mean = (x * w).sum(1, keepdim=True) / counts[:, None]
    within = (((x - utt_mean) ** 2) * w).sum()
    frames = x[valid]
    total = ((frames - frames.mean(0)) ** 2).sum()
    return within.item(), total.item()


def _speaker_loss(logits: torch.Tensor, speaker: torch.Tensor, log: dict) -> torch.Tensor:
    """Mean cross-entropy over utterances of speakers the classifier knows (-100: unknown)."""
    known = speaker != -100
    ce = F.cross_entropy(logits, speaker, ignore_index=-100, reduction="sum")
    n = int(known.sum())
    log["sum_speaker"] = ce.item()
    log["count_speaker"] = n
    log["correct_speaker"] = int((logits.argmax(-1)[known] == speaker[known]).sum())
    return ce / max(n, 1)


def _pitch_loss(pred: torch.Tensor, pitch: torch.Tensor, padding_mask: torch.Tensor | None, log: dict) -> torch.Tensor:
    """L1 between predicted and true log-F0 on voiced frames, plus voicing BCE on all
    frames; the pitch track may be a frame longer or shorter than the model's output."""
    frames = min(pred.shape[1], pitch.shape[1])
    pred, pitch = pred[:, :frames], pitch[:, :frames]
    valid = pitch[..., 1] >= 0
    if padding_mask is not None:
        valid &= ~padding_mask[:, :frames]
    voiced = valid & (pitch[..., 1] > 0) & (pitch[..., 0] > 0)
    l1 = (pred[..., 0][voiced] - pitch[..., 0][voiced].log()).abs().sum()
    bce = F.binary_cross_entropy_with_logits(pred[..., 1][valid], pitch[..., 1][valid], reduction="sum")
    n_voiced, n_valid = int(voiced.sum()), int(valid.sum())
    log["sum_f0"] = l1.item()
    log["count_f0"] = n_voiced
    log["correct_voicing"] = int(((pred[..., 1][valid] > 0) == (pitch[..., 1][valid] > 0)).sum())
    log["count_voicing"] = n_valid
    return l1 / max(n_voiced, 1) + bce / max(n_valid, 1)
