"""HuBERT pretraining (``model._name=hubert``): masked prediction of frame labels, with
the disentangling heads when configured; the loss is fairseq's ``hubert_criterion.py``."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from hubertkit.config.model import HubertConfig
from hubertkit.config.train import HubertCriterionConfig, TrainConfig
from hubertkit.data.dataset import HubertDataset, check_same_kmeans, load_label_sets
from hubertkit.data.manifest import manifest_path
from hubertkit.errors import HubertkitError
from hubertkit.model.disentangle import build_hubert
from hubertkit.train.tasks.base import Ratio, Stats, Task, first_difference

log = logging.getLogger(__name__)
COLLAPSE_SHARE = 0.05  # below this share of within-utterance variance at validation, warn


class PretrainingTask(Task):
    checkpoint_kind = "hubert"

    def __init__(self, cfg: TrainConfig, splits: list[str], trust_pickle: bool = False):
        task = cfg.task
        if task.label_rate != -1 and float(task.label_rate) != float(cfg.model.label_rate):
            raise HubertkitError(
                f"task.label_rate={task.label_rate} but model.label_rate={cfg.model.label_rate}: they must agree "
                "(fairseq's configs set task.label_rate: ${model.label_rate})"
            )
        if task.single_target and len(task.labels) > 1:
            raise HubertkitError(f"task.single_target=true with {len(task.labels)} label sets is not supported: "
                                 "hubertkit predicts every label set")
        if cfg.model.normalize and not task.normalize:
            raise HubertkitError("model.normalize=true but task.normalize=false: the task reads the waveforms; set "
                                 "task.normalize=true (model.normalize follows it)")
        if (cfg.model.speaker_layer or cfg.model.pitch_layer) and not task.feat_dir:
            raise HubertkitError("model.speaker_layer / model.pitch_layer need task.feat_dir (dump-pitch and speakers output)")
        self.cfg = cfg
        label_dir = task.label_dir or task.data
        self.label_sets = load_label_sets(label_dir, task.labels, float(cfg.model.label_rate))
        check_same_kmeans(label_dir, splits, task.labels)
        common = dict(
            label_sets=self.label_sets, sample_rate=task.sample_rate, max_sample_size=task.max_sample_size,
            pad_audio=task.pad_audio, random_crop=task.random_crop, normalize=task.normalize,
            skip_misaligned=task.skip_misaligned, max_keep_size=task.max_keep_size, min_keep_size=task.min_sample_size,
            feat_dir=task.feat_dir, pitch_rate=task.sample_rate / cfg.model.downsample,
        )
        self.datasets = [HubertDataset(manifest_path(task.data, s), label_dir, s, **common) for s in splits]

    def build_model(self) -> nn.Module:
        num_speakers = len(self.datasets[0].speaker_names) if self.cfg.task.feat_dir else 0
        arch = HubertConfig.from_dict({**self.cfg.model.to_dict(), "num_speakers": num_speakers,
                                       "num_classes": [ls.num_classes for ls in self.label_sets],
                                       "normalize": self.cfg.task.normalize})
        return build_hubert(arch)

    @staticmethod
    def encoder(model: nn.Module) -> nn.Module:
        return model

    @staticmethod
    def loader_masks(model: nn.Module) -> HubertConfig:
        return model.cfg

    @staticmethod
    def forward(net, batch: dict, generator, num_updates: int) -> dict:
        """The network's output for ``batch``, with the masks the loader drew for it (a
        training batch) or drawn from ``generator`` (validation)."""
        masks = (batch["mask_indices"], batch["channel_mask"]) if "mask_indices" in batch else None
        return net(batch["source"], batch["target_list"], padding_mask=batch["padding_mask"], generator=generator,
                   num_updates=num_updates, masks=masks)

    def loss(self, net, batch: dict, generator, train: bool, num_updates: int) -> tuple[torch.Tensor, int, Stats]:
        out = self.forward(net, batch, generator, num_updates)
        extras = {k: batch[k] for k in ("speaker", "pitch") if k in batch}
        loss, sample_size, stats = hubert_loss(out, self.cfg.criterion, **extras)
        if not train:  # a collapse alarm
            stats["mean_within_var"] = Ratio(*within_utterance_variance(out["x"], out["padding_mask"]))
        return loss, sample_size, stats

    @staticmethod
    def progress_fields(summary: dict) -> dict[str, str]:
        return {"acc_m": f"{summary['acc_m_0']:.3f}"} if "acc_m_0" in summary else {}

    @staticmethod
    def after_validation(valid: dict, num_updates: int) -> None:
        """Warn when the top layer's frames stop differing within utterances."""
        if valid.get("mean_within_var", 1.0) < COLLAPSE_SHARE:
            log.warning("update %d: only %.1f%% of the top layer's variance is within utterances: the representation "
                        "is collapsing (lower optimization.lr or lengthen the warm-up)", num_updates,
                        100 * valid["mean_within_var"])

    def check_start(self, state: dict, fresh: list[str], path) -> None:
        """A label set's rows taken from the checkpoint must mean the same labels here."""
        if "label set" in fresh or "dictionaries" not in state:
            return
        for ls, theirs in zip(self.label_sets, state["dictionaries"]):
            if list(theirs) != ls.symbols:
                raise HubertkitError(f"{path} was trained with another dict.{ls.name}.txt ({first_difference(ls.symbols, list(theirs))}): "
                                     "its label embeddings would be read as other labels. Use the dictionary it was "
                                     "trained with, or another checkpoint.save_dir")

    def checkpoint_fields(self, model: nn.Module) -> dict:
        """The label dictionaries (symbols of each ``dict.*.txt``), for an export that
        carries them as fairseq's checkpoints do."""
        return {"dictionaries": [ls.symbols for ls in self.label_sets]}


def hubert_loss(
    out: dict, cfg: HubertCriterionConfig = HubertCriterionConfig(), speaker: torch.Tensor | None = None,
    pitch: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int, Stats]:
    """Summed cross-entropy of masked (and, if weighted, unmasked) frames over all label
    sets, plus ``loss_weights[0] · features_pen · sample_size``, plus the disentangling
    heads' mean losses times their weights and ``sample_size`` (when the model has them).

    Returns the loss (a sum: divide by ``sample_size`` for a per-frame value), the
    sample size (frames scored) and the statistics to log.
    """
    loss = torch.zeros((), device=out["x"].device)
    sample_size = 0
    log: Stats = {}
    for kind, weight in (("m", cfg.pred_masked_weight), ("u", cfg.pred_nomask_weight)):
        logits, targets = out.get(f"logit_{kind}_list", []), out.get(f"target_{kind}_list", [])
        terms = []
        for i, (lg, t) in enumerate(zip(logits, targets)):
            ce = F.cross_entropy(lg, t.long(), reduction="sum")
            terms.append(ce)
            log[f"loss_{kind}_{i}"] = ce.detach()
            with torch.no_grad():
                log[f"acc_{kind}_{i}"] = Ratio((lg.argmax(-1) == t).sum() if lg.numel() else 0, t.numel())
        if weight > 0 and terms:
            loss = loss + weight * sum(terms)
            sample_size += targets[0].numel()
    if cfg.loss_weights and cfg.loss_weights[0] != 0:
        pen = cfg.loss_weights[0] * out["features_pen"].float() * sample_size
        loss = loss + pen
        log["loss_features_pen"] = pen.detach()
    if "speaker_logits" in out:
        loss = loss + cfg.speaker_loss_weight * sample_size * _speaker_loss(out["speaker_logits"], speaker, log)
    if "pitch_pred" in out:
        loss = loss + cfg.pitch_loss_weight * sample_size * _pitch_loss(out["pitch_pred"], pitch, out["padding_mask"], log)
    log["loss"] = loss.detach()
    log["sample_size"] = sample_size
    return loss, sample_size, log


def within_utterance_variance(x: torch.Tensor, padding_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
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
    return within, total


def _speaker_loss(logits: torch.Tensor, speaker: torch.Tensor, log: Stats) -> torch.Tensor:
    """Mean cross-entropy over utterances of speakers the classifier knows (-100: unknown)."""
    known = speaker != -100
    ce = F.cross_entropy(logits, speaker, ignore_index=-100, reduction="sum")
    n = known.sum()
    log["mean_speaker"] = Ratio(ce.detach(), n)
    log["acc_speaker"] = Ratio((logits.argmax(-1)[known] == speaker[known]).sum(), n)
    return ce / n.clamp(min=1)


def _pitch_loss(pred: torch.Tensor, pitch: torch.Tensor, padding_mask: torch.Tensor | None, log: Stats) -> torch.Tensor:
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
    n_voiced, n_valid = voiced.sum(), valid.sum()
    log["mean_f0"] = Ratio(l1.detach(), n_voiced)
    log["acc_voicing"] = Ratio(((pred[..., 1][valid] > 0) == (pitch[..., 1][valid] > 0)).sum(), n_valid)
    return l1 / n_voiced.clamp(min=1) + bce / n_valid.clamp(min=1)
