"""CTC fine-tuning (``model._name=hubert_ctc``, ``criterion._name=ctc``): letters from
``{split}.ltr`` on a pretrained encoder, as fairseq's ``hubert_ctc``."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from hubertkit.config.train import TrainConfig
from hubertkit.data.ctc_dataset import TranscribedDataset
from hubertkit.data.dictionary import SPECIALS
from hubertkit.data.labels import dict_path
from hubertkit.data.manifest import manifest_path
from hubertkit.errors import HubertkitError
from hubertkit.model.ctc import HubertCTC, frame_lengths
from hubertkit.model.decode import greedy_ids
from hubertkit.model.io import load_model
from hubertkit.train.tasks.base import Stats, Task, add_errors, first_difference, unwrap


class FinetuningTask(Task):
    checkpoint_kind = "ctc"

    def __init__(self, cfg: TrainConfig, splits: list[str], trust_pickle: bool = False):
        self.cfg, self.trust_pickle = cfg, trust_pickle
        task = cfg.task
        label_dir = task.label_dir or task.data
        if len(task.labels) != 1:
            raise HubertkitError(f"fine-tuning reads one transcript label (e.g. task.labels='[ltr]'), got {task.labels}")
        self.datasets = [TranscribedDataset(manifest_path(task.data, s), label_dir, s, task.labels[0], task.sample_rate,
                                            task.min_sample_size, task.max_keep_size, task.normalize) for s in splits]

    def build_model(self) -> nn.Module:
        m = self.cfg.model
        pretrained = load_model(m.w2v_path, self.trust_pickle)
        if pretrained.cfg.normalize != self.cfg.task.normalize:
            raise HubertkitError(f"{m.w2v_path} was pretrained with task.normalize={pretrained.cfg.normalize}; "
                                 f"fine-tune with the same (task.normalize={pretrained.cfg.normalize})")
        arch = dataclasses.replace(pretrained.cfg, **m.encoder_changes())  # its normalize too, random init or not
        model = HubertCTC(arch, self.datasets[0].symbols, m.final_dropout)
        if not m.no_pretrained_weights:
            model.load_encoder(pretrained)
        model.freeze_finetune_updates = m.freeze_finetune_updates
        return model

    @staticmethod
    def encoder(model: nn.Module) -> nn.Module:
        return model.hubert

    def loss(self, net, batch: dict, generator, train: bool, num_updates: int) -> tuple[torch.Tensor, int, Stats]:
        log_probs, frame_pad = net(batch["source"], batch["padding_mask"], mask=train and self.cfg.model.apply_mask, generator=generator,
                                  num_updates=num_updates)
        b = log_probs.shape[0]
        input_lengths = frame_lengths(log_probs, frame_pad)
        target, target_lengths = batch["target"], batch["target_lengths"]
        loss = F.ctc_loss(log_probs.transpose(0, 1), target, input_lengths, target_lengths, blank=0, reduction="sum",
                          zero_infinity=self.cfg.criterion.zero_infinity)
        ntokens = int(target_lengths.sum())
        sample_size = b if self.cfg.optimization.sentence_avg else ntokens
        log = {"loss": loss.detach(), "sample_size": sample_size, "ntokens": ntokens, "nsentences": b}
        if not train:  # greedy decoding: letter and word errors, as fairseq's ctc criterion reports
            vocab = unwrap(net).vocab
            for i in range(b):
                ref = target[i, : target_lengths[i]].tolist()
                hyp = greedy_ids(log_probs[i, : input_lengths[i]].cpu())
                add_errors(log, [vocab[j] for j in ref], [vocab[j] for j in hyp if j >= len(SPECIALS)])
        return loss, sample_size, log

    def check_start(self, state: dict, fresh: list[str], path) -> None:
        """The CTC head's rows are the letters of the checkpoint's dictionary: another order
        (``prepare-text`` on more text orders letters by count) would swap letters."""
        here = self.datasets[0].symbols
        if state["symbols"] != here:
            letters = dict_path(self.cfg.task.label_dir or self.cfg.task.data, self.cfg.task.labels[0])
            raise HubertkitError(f"{path} was fine-tuned with other letters than {letters} ("
                                 f"{first_difference(here, state['symbols'])}): its output rows would be read as other "
                                 "letters. Use the dictionary it was trained with, or another checkpoint.save_dir")

    @staticmethod
    def checkpoint_fields(model: nn.Module) -> dict:
        """What ``load_ctc`` needs besides the weights: the letters and the final dropout."""
        return {"symbols": model.symbols, "final_dropout": model.final_dropout.p}
