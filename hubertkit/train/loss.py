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


def hubert_loss(out: dict, cfg: CriterionConfig = CriterionConfig()) -> tuple[torch.Tensor, int, dict]:
    """Summed cross-entropy of masked (and, if weighted, unmasked) frames over all label
    sets, plus ``loss_weights[0] · features_pen · sample_size``.

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
    log["loss"] = loss.item()
    log["sample_size"] = sample_size
    return loss, sample_size, log
