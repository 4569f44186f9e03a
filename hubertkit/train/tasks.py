"""What the trainer trains: HuBERT pretraining (masked prediction of k-means labels, with
the disentangling heads when configured), CTC fine-tuning of a pretrained encoder, or
unit-based ASR (units to letters).

A task builds the datasets and the model, and turns a batch into a loss, a sample size
(what gradients are divided by) and statistics. Everything else (updates, precision,
distribution, checkpoints, resume, logging) is the trainer's and shared.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hubertkit.config import TrainConfig
from hubertkit.data.manifest import manifest_path
from hubertkit.errors import HubertkitError


class PretrainingTask:
    def __init__(self, cfg: TrainConfig, splits: list[str]):
        from hubertkit.data.dataset import HubertDataset, check_same_kmeans, load_label_sets

        task = cfg.task
        if float(task.label_rate) != float(cfg.model.label_rate):
            raise HubertkitError(
                f"task.label_rate={task.label_rate} but model.label_rate={cfg.model.label_rate}: they must agree "
                "(fairseq's configs set task.label_rate: ${model.label_rate})"
            )
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
        from hubertkit.model.hubert import HubertModel

        num_speakers = len(self.datasets[0].speaker_names) if self.cfg.task.feat_dir else 0
        model = HubertModel(self.cfg.model_config([ls.num_classes for ls in self.label_sets], num_speakers))
        model.normalize_waveform = self.cfg.task.normalize
        return model

    @staticmethod
    def encoder(model: nn.Module) -> nn.Module:
        return model

    def loss(self, net, batch: dict, device, generator, train: bool) -> tuple[torch.Tensor, int, dict]:
        from hubertkit.train.loss import hubert_loss, within_utterance_variance

        pad = batch["padding_mask"].to(device) if batch["padding_mask"] is not None else None
        out = net(batch["source"].to(device), [t.to(device) for t in batch["target_list"]], padding_mask=pad, generator=generator)
        extras = {k: batch[k].to(device) for k in ("speaker", "pitch") if k in batch}
        loss, sample_size, log = hubert_loss(out, self.cfg.criterion, **extras)
        if not train:  # a collapse alarm: logged as mean_within_var
            log["sum_within_var"], log["count_within_var"] = within_utterance_variance(out["x"], out["padding_mask"])
        return loss, sample_size, log

    def checkpoint_fields(self, model: nn.Module) -> dict:
        """The label dictionaries (symbols of each ``dict.*.txt``), for an export that
        carries them as fairseq's checkpoints do."""
        return {"dictionaries": [ls.symbols for ls in self.label_sets]}


class FinetuningTask:
    """fairseq's ``hubert_ctc`` with the ``ctc`` criterion: letters from ``{split}.ltr``."""

    # keys of the pretrained model that fine-tuning sets (fairseq's HubertEncoder overrides)
    OVERRIDES = ("dropout", "attention_dropout", "activation_dropout", "dropout_input", "feature_grad_mult",
                 "mask_length", "mask_prob", "mask_selection", "mask_other", "no_mask_overlap",
                 "mask_channel_length", "mask_channel_prob", "mask_channel_selection", "mask_channel_other",
                 "no_mask_channel_overlap")

    def __init__(self, cfg: TrainConfig, splits: list[str], trust_pickle: bool = False):
        from hubertkit.data.ctc_dataset import TranscribedDataset

        self.cfg, self.trust_pickle = cfg, trust_pickle
        task = cfg.task
        label_dir = task.label_dir or task.data
        if len(task.labels) != 1:
            raise HubertkitError(f"fine-tuning reads one transcript label (e.g. task.labels='[ltr]'), got {task.labels}")
        self.datasets = [TranscribedDataset(manifest_path(task.data, s), label_dir, s, task.labels[0], task.sample_rate,
                                            task.min_sample_size, task.max_keep_size, task.normalize) for s in splits]

    def build_model(self) -> nn.Module:
        import dataclasses

        from hubertkit.model.ctc import HubertCTC
        from hubertkit.model.io import load_model

        m = self.cfg.model
        pretrained = load_model(m.w2v_path, self.trust_pickle)
        if pretrained.normalize_waveform != self.cfg.task.normalize:
            raise HubertkitError(f"{m.w2v_path} was pretrained with task.normalize={pretrained.normalize_waveform}; "
                                 f"fine-tune with the same (task.normalize={pretrained.normalize_waveform})")
        changes = {k: getattr(m, k) for k in self.OVERRIDES}
        arch = dataclasses.replace(pretrained.cfg, **changes, encoder_layerdrop=m.layerdrop)
        model = HubertCTC(arch, self.datasets[0].symbols, m.final_dropout)
        if not m.no_pretrained_weights:
            model.load_encoder(pretrained)
        model.hubert.normalize_waveform = pretrained.normalize_waveform  # random init too: the data is the same
        model.freeze_finetune_updates = m.freeze_finetune_updates
        return model

    @staticmethod
    def encoder(model: nn.Module) -> nn.Module:
        return model.hubert

    def loss(self, net, batch: dict, device, generator, train: bool) -> tuple[torch.Tensor, int, dict]:
        from hubertkit.asr.decode import greedy_ids
        from hubertkit.data.dictionary import SPECIALS
        from hubertkit.model.ctc import frame_lengths

        pad = batch["padding_mask"].to(device) if batch["padding_mask"] is not None else None
        log_probs, frame_pad = net(batch["source"].to(device), pad, mask=train and self.cfg.model.apply_mask, generator=generator)
        b = log_probs.shape[0]
        input_lengths = frame_lengths(log_probs, frame_pad)
        target, target_lengths = batch["target"].to(device), batch["target_lengths"].to(device)
        loss = F.ctc_loss(log_probs.transpose(0, 1), target, input_lengths, target_lengths, blank=0, reduction="sum",
                          zero_infinity=self.cfg.criterion.zero_infinity)
        ntokens = int(target_lengths.sum())
        sample_size = b if self.cfg.optimization.sentence_avg else ntokens
        log = {"loss": loss.item(), "sample_size": sample_size, "ntokens": ntokens, "nsentences": b}
        if not train:  # greedy decoding: letter and word errors, as fairseq's ctc criterion reports
            vocab = _unwrap(net).vocab
            for i in range(b):
                ref = target[i, : target_lengths[i]].tolist()
                hyp = greedy_ids(log_probs[i, : input_lengths[i]].cpu())
                _add_errors(log, [vocab[j] for j in ref], [vocab[j] for j in hyp if j >= len(SPECIALS)])
        return loss, sample_size, log

    @staticmethod
    def checkpoint_fields(model: nn.Module) -> dict:
        """What ``load_ctc`` needs besides the weights: the letters and the final dropout."""
        return {"symbols": model.symbols, "final_dropout": model.final_dropout.p}


class UnitAsrTask:
    """Units to letters (``unit-asr train``): BART with cross-entropy, or the CTC baseline."""

    def __init__(self, cfg: TrainConfig, splits: list[str]):
        from hubertkit.data.unit_dataset import UnitTextDataset

        self.cfg = cfg
        task, m = cfg.task, cfg.model
        hop = round(task.sample_rate / float(task.label_rate))  # task.label_rate: the units' frame rate
        train = UnitTextDataset(task.data, task.texts, num_units=task.num_units, samples_per_frame=hop)
        self.datasets = [train] + [UnitTextDataset(task.valid_data, task.texts, train.vocab, samples_per_frame=hop)
                                   for _ in splits[1:]]
        for d, path in zip(self.datasets, (task.data, task.valid_data)):
            longest, longest_text = int(d.sizes.max()), max(len(t) for t in d.targets)
            if longest > m.max_source_positions or longest_text > m.max_target_positions:
                raise HubertkitError(
                    f"{path}: the longest utterance has {longest} units and {longest_text} letters, but "
                    f"model.max_source_positions={m.max_source_positions} and "
                    f"model.max_target_positions={m.max_target_positions}: raise them")

    def build_model(self) -> nn.Module:
        from hubertkit.model.unit_asr import build_unit_asr

        return build_unit_asr(self.cfg.unit_asr_arch(self.datasets[0].vocab))

    @staticmethod
    def encoder(model: nn.Module) -> nn.Module:
        return model

    def loss(self, net, batch: dict, device, generator, train: bool) -> tuple[torch.Tensor, int, dict]:
        from hubertkit.asr.unit_vocab import PAD

        source, pad = batch["source"].to(device), batch["padding_mask"].to(device)
        target, target_lengths = batch["target"].to(device), batch["target_lengths"].to(device)
        model = _unwrap(net)
        if model.cfg.arch == "bart":
            logits = net(source, pad, target)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), target.flatten(), ignore_index=PAD, reduction="sum",
                                   label_smoothing=self.cfg.criterion.label_smoothing)
            ntokens = int(target_lengths.sum())
        else:  # CTC: the letters without the closing </s>
            log_probs, frame_pad = net(source, pad)
            target_lengths = target_lengths - 1
            loss = F.ctc_loss(log_probs.float().transpose(0, 1), target, (~frame_pad).sum(1), target_lengths, blank=0,
                              reduction="sum", zero_infinity=self.cfg.criterion.zero_infinity)
            ntokens = int(target_lengths.sum())
        b = source.shape[0]
        sample_size = b if self.cfg.optimization.sentence_avg else ntokens
        log = {"loss": loss.item(), "sample_size": sample_size, "ntokens": ntokens, "nsentences": b}
        if not train:  # greedy decoding (beam 1), letter and word errors
            vocab = model.cfg.vocab
            for ref, hyp in zip(target.tolist(), model.decode(source, pad, beam=1)):
                _add_errors(log, vocab.letters_of(ref), vocab.letters_of(hyp))
        return loss, sample_size, log

    @staticmethod
    def checkpoint_fields(model: nn.Module) -> dict:
        return {}


def _unwrap(net: nn.Module) -> nn.Module:
    return net.module if hasattr(net, "module") else net


def _add_errors(log: dict, ref: list[str], hyp: list[str]) -> None:
    """Letter (``u``) and word (``w``) edit counts of one utterance's ``.ltr`` symbols,
    added to ``log``."""
    words = ["".join(x).replace("|", " ").split() for x in (ref, hyp)]
    log["errors_u"] = log.get("errors_u", 0) + _edits(ref, hyp)
    log["count_u"] = log.get("count_u", 0) + len(ref)
    log["errors_w"] = log.get("errors_w", 0) + _edits(words[0], words[1])
    log["count_w"] = log.get("count_w", 0) + len(words[0])


def _edits(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance between two token lists."""
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        current = [i]
        for j, h in enumerate(hyp, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1]


def make_task(cfg: TrainConfig, splits: list[str], trust_pickle: bool = False):
    """``trust_pickle``: fine-tuning may start from a fairseq checkpoint that pickles its config."""
    if cfg.unit_asr:
        return UnitAsrTask(cfg, splits)
    return FinetuningTask(cfg, splits, trust_pickle) if cfg.fine_tuning else PretrainingTask(cfg, splits)


def has_split(cfg: TrainConfig, split: str) -> bool:
    """Whether the data has ``split`` (the valid split is optional)."""
    if cfg.unit_asr:
        return split == cfg.dataset.train_subset or (split == cfg.dataset.valid_subset and bool(cfg.task.valid_data))
    return manifest_path(cfg.task.data, split).is_file()
