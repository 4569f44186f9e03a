"""Unit-based ASR (``model._name=unit_bart`` or ``unit_ctc``, ``task._name=unit_asr``):
discrete units to letters, by BART with cross-entropy or by the CTC baseline."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from hubertkit.config.train import TrainConfig
from hubertkit.data.unit_dataset import UnitTextDataset
from hubertkit.data.unit_vocab import PAD
from hubertkit.errors import HubertkitError
from hubertkit.model.unit_asr import UnitAsrArch, build_unit_asr
from hubertkit.train.tasks.base import Stats, Task, add_errors, unwrap


class UnitAsrTask(Task):
    """Units to letters (``unit-asr train``): BART with cross-entropy, or the CTC baseline."""

    checkpoint_kind = "unit_asr"

    def __init__(self, cfg: TrainConfig, splits: list[str], trust_pickle: bool = False):
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
        vocab = self.datasets[0].vocab
        arch = self.cfg.model._name.removeprefix("unit_")
        return build_unit_asr(UnitAsrArch(**dataclasses.asdict(self.cfg.model), arch=arch, symbols=list(vocab.symbols),
                                          num_units=vocab.num_units))

    @staticmethod
    def encoder(model: nn.Module) -> nn.Module:
        return model

    def loss(self, net, batch: dict, generator, train: bool, num_updates: int) -> tuple[torch.Tensor, int, Stats]:
        source, pad = batch["source"], batch["padding_mask"]
        target, target_lengths = batch["target"], batch["target_lengths"]
        model = unwrap(net)
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
        log = {"loss": loss.detach(), "sample_size": sample_size, "ntokens": ntokens, "nsentences": b}
        if not train:  # greedy decoding (beam 1), letter and word errors
            vocab = model.cfg.vocab
            for ref, hyp in zip(target.tolist(), model.decode(source, pad, beam=1)):
                add_errors(log, vocab.letters_of(ref), vocab.letters_of(hyp))
        return loss, sample_size, log
