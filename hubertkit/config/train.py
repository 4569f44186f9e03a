"""What ``hubertkit train`` reads: fairseq's config groups and key names, as typed dataclasses.

A group with a ``_name`` (task, model, criterion, optimizer, lr_scheduler) has one
dataclass per name in ``SECTIONS``: ``model._name=hubert_ctc`` brings the fine-tuning
keys, and a key of another section is refused. Every default lives here once; the
YAMLs in ``configs/`` set only what differs from it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from omegaconf import II, MISSING

from hubertkit.config.keys import AT_LEAST_1, EPOCHS, UNIT_INTERVAL, key, same_as
from hubertkit.config.model import HubertConfig


@dataclass(frozen=True)
class CommonConfig:
    seed: int = key(1, "seed of the initial weights, the data order, the crops and the masks")
    fp16: bool = key(False, "mixed precision on a GPU: bfloat16 where the GPU supports it, else float16 with a dynamic "
                            "loss scale")
    bf16: bool = key(False, "bfloat16 mixed precision on a GPU")
    compile: str | None = key(None, "torch.compile the feature extractor and the Transformer in place, for any "
                              "length, with this backend: 'inductor' (fused kernels, for GPUs), 'aot_eager' (the "
                              "plumbing without code generation); null: eager. A hubertkit key; checkpoints are the "
                              "same either way", check=(lambda v: v in (None, "inductor", "aot_eager", "eager"),
                                                        "null, 'inductor', 'aot_eager' or 'eager'"))
    log_interval: int = key(100, "updates between log lines", check=AT_LEAST_1)
    log_format: str | None = key(None, "'json': one JSON line per log interval on stdout; anything else: a progress bar")
    tensorboard_logdir: str | None = key(None, "also log to TensorBoard in this folder (needs tensorboard)")
    wandb_project: str | None = key(None, "also log to this Weights & Biases project (needs wandb)")


@dataclass(frozen=True)
class PretrainingTaskConfig:
    """``task._name=hubert_pretraining``: audio manifests and frame labels."""

    _name: str = "hubert_pretraining"
    data: str = key(MISSING, "folder of the manifests ({split}.tsv)")
    label_dir: str | None = key(None, "folder of the labels ({split}.{label}, dict.{label}.txt); default: task.data")
    labels: list[str] = key(factory=lambda: ["ltr"], help="label set extensions, e.g. [km]; several sets are predicted "
                                                          "together")
    label_rate: float = key(-1.0, "frame rate of the labels in Hz; -1 takes model.label_rate (fairseq's YAMLs write "
                                  "${model.label_rate})")
    sample_rate: int = key(16000, "audio sample rate",
                           only="HuBERT's conv stack and hubertkit's audio reading are for 16 kHz audio")
    max_sample_size: int | None = key(None, "longest crop in samples; longer utterances are cropped (null: no limit)")
    min_sample_size: int | None = key(None, "utterances shorter than this many samples are left out")
    max_keep_size: int | None = key(None, "utterances longer than this many samples are left out")
    pad_audio: bool = key(False, "pad a batch to its longest utterance instead of cropping to its shortest")
    random_crop: bool = key(True, "crop at a random offset (false: from the start)")
    normalize: bool = key(False, "standardise each waveform to zero mean and unit variance (the Large and X-Large "
                                 "models were trained so)")
    single_target: bool = key(False, "fairseq: hand the batch one label set as its target (refused with several sets)")
    skip_misaligned: bool = key(False, "leave out utterances whose audio and labels differ by more than 0.1 s "
                                       "(default: refuse them; fairseq only warns and trains on them)")
    feat_dir: str | None = key(None, "disentangling variant: the folder of dump-pitch's shards and the speaker files")
    fine_tuning: bool = key(False, "fairseq's flag; true exactly when model._name=hubert_ctc")


@dataclass(frozen=True)
class UnitAsrTaskConfig:
    """``task._name=unit_asr``: units JSONL files and their transcripts."""

    _name: str = "unit_asr"
    data: str = key(MISSING, "the train split's units (JSONL, from hubertkit units)")
    valid_data: str | None = key(None, "the valid split's units (JSONL)")
    texts: str = key(MISSING, "transcripts of both splits (utterance<TAB>text, or JSON lines)")
    num_units: int | None = key(None, "the k-means K; default: the largest unit id in train, plus 1")
    label_rate: float = key(50.0, "frame rate of the units in Hz")
    sample_rate: int = key(16000, "sample rate of the audio the units came from")


@dataclass(frozen=True)
class DatasetConfig:
    num_workers: int = key(1, "processes that read audio for training (0: the training process itself)",
                           check=(lambda v: v >= 0, ">= 0"))
    max_tokens: int | None = key(None, "samples per batch, padding included (this or batch_size)",
                                 check=(lambda v: v is None or v >= 1, ">= 1 (or null)"))
    batch_size: int | None = key(None, "utterances per batch (this or max_tokens)")
    train_subset: str = key("train", "the split trained on")
    valid_subset: str = key("valid", "the split validated on")
    validate_interval: int = key(1, "validate at the end of every N-th epoch", check=EPOCHS)
    validate_interval_updates: int = key(0, "also validate every N updates (0: never)")
    validate_after_updates: int = key(0, "no validation before this update")
    disable_validation: bool = key(False, "never validate")
    skip_invalid_size_inputs_valid_test: bool = key(False, "fairseq: leave out utterances too long for a batch",
                                                    no_effect="an utterance longer than dataset.max_tokens is an error")
    required_batch_size_multiple: int = key(1, "round batch sizes down to a multiple of this",
                                            only="batch sizes are not rounded to a multiple (fairseq's default: 8)")


@dataclass(frozen=True)
class OptimizationConfig:
    max_update: int = key(0, "updates to train", check=(lambda v: v >= 0, ">= 0 (0: no limit; max_epoch ends the run)"))
    max_epoch: int = key(0, "epochs to train (0: no limit; max_update ends the run)")
    lr: list[float] = key(factory=lambda: [0.25], help="peak learning rate, in a list", check=(
        lambda v: len(v) == 1 and v[0] > 0, "one positive learning rate in a list (fairseq's per-epoch lists are not "
                                            "implemented)"))
    clip_norm: float = key(0.0, "clip the gradient to this norm", check=(lambda v: v >= 0, ">= 0 (0: no clipping)"))
    update_freq: list[int] = key(factory=lambda: [1], help="batches accumulated per update, in a list (on 1 GPU, 8 "
                                                           "stands in for 8 GPUs)", check=(
        lambda v: len(v) == 1 and v[0] >= 1, "one integer >= 1 in a list (fairseq's per-epoch lists are not implemented)"))
    sentence_avg: bool = key(False, "CTC: normalise gradients per utterance, not per frame")

    @property
    def update_limit(self) -> float:
        """``max_update`` as a bound: 0 means none (as fairseq), and ``max_epoch`` ends the run."""
        return self.max_update or math.inf


@dataclass(frozen=True)
class AdamConfig:
    _name: str = "adam"
    adam_betas: Any = key("(0.9,0.999)", "Adam's two moment decays (fairseq writes the pair as a string)")
    adam_eps: float = key(1e-8, "Adam's epsilon")
    weight_decay: float = key(0.0, "decoupled weight decay (AdamW's)")

    @property
    def betas(self) -> tuple[float, float]:
        betas = self.adam_betas
        if isinstance(betas, str):
            betas = [v for v in betas.strip("()[] ").split(",") if v.strip()]
        return tuple(float(b) for b in betas)


@dataclass(frozen=True)
class PolynomialDecayConfig:
    _name: str = "polynomial_decay"
    warmup_updates: int = key(0, "updates of linear warm-up from 0 to the peak learning rate")
    end_learning_rate: float = key(0.0, "learning rate at the end of the decay")
    power: float = key(1.0, "exponent of the decay (1: linear)")
    total_num_update: int = key(II("optimization.max_update"), "update at which the decay ends")


@dataclass(frozen=True)
class TriStageConfig:
    """Fine-tuning: warm-up, hold, exponential decay."""

    _name: str = "tri_stage"
    warmup_steps: int = key(0, "updates of linear warm-up")
    hold_steps: int = key(0, "updates at the peak learning rate")
    decay_steps: int = key(0, "updates of exponential decay")
    phase_ratio: list[float] | None = key(None, "the three phases as fractions of max_update, instead of the steps")
    init_lr_scale: float = key(0.01, "learning rate at the start of the warm-up, as a fraction of the peak")
    final_lr_scale: float = key(0.01, "learning rate at the end of the decay, as a fraction of the peak")


@dataclass(frozen=True)
class CheckpointConfig:
    save_dir: str = key("checkpoints", "folder of the checkpoints and the training log")
    restore_file: str = key("checkpoint_last.pt", "the default resumes from checkpoint_last.pt in save_dir when it is "
                                                  "there; any other value loads that file")
    finetune_from_model: str | None = key(None, "start from this checkpoint's weights (any format hubertkit reads) with "
                                                "a fresh optimizer, schedule, data order and meters, unless save_dir "
                                                "already holds checkpoint_last.pt")
    reset_optimizer: bool = key(False, "do not load restore_file's optimizer state and update count")
    reset_lr_scheduler: bool = key(False, "fairseq's flag; hubertkit's schedules follow the update count")
    reset_dataloader: bool = key(False, "start at epoch 1, batch 0")
    reset_meters: bool = key(False, "start the best validation loss, audio hours and skipped-update counts anew")
    save_interval: int = key(1, "write checkpoint_last.pt at the end of every N-th epoch", check=EPOCHS)
    save_interval_updates: int = key(0, "also write checkpoint_last.pt every N updates, and keep "
                                        "checkpoint_{epoch}_{update}.pt (0: never)")
    keep_interval_updates: int = key(-1, "keep the last N update checkpoints (-1: all)")
    no_epoch_checkpoints: bool = key(True, "write no per-epoch checkpoint_{epoch}.pt",
                                     only="hubertkit writes no per-epoch checkpoints (fairseq's default: false)")
    no_save: bool = key(False, "write no checkpoints")
    best_checkpoint_metric: str = key("loss", "the validation metric that picks checkpoint_best.pt")
    maximize_best_checkpoint_metric: bool = key(False, "higher is better for best_checkpoint_metric")
    max_nonfinite_updates: int = key(10, "stop after this many consecutive updates with a non-finite loss",
                                     check=AT_LEAST_1)


@dataclass(frozen=True)
class DistributedTrainingConfig:
    distributed_world_size: int = key(1, "processes in the run; a configured size that differs from the launcher's "
                                         "is warned about", departs="the launcher (torchrun, submit) sets the world size")
    distributed_backend: str = key("nccl", "torch.distributed backend on GPUs (runs on CPUs use gloo)")
    ddp_backend: str = key("pytorch_ddp", "'fully_sharded': FSDP (for Large and X-Large); anything else: DDP")
    distributed_port: int = key(-1, "rendezvous port", no_effect="torchrun sets the rendezvous")
    nprocs_per_node: int = key(1, "processes per node", no_effect="torchrun sets the processes per node")
    find_unused_parameters: bool = key(False, "DDP's flag for parameters some updates do not use")


@dataclass(frozen=True)
class HubertCriterionConfig:
    _name: str = "hubert"
    pred_masked_weight: float = key(1.0, "weight of the masked frames' cross-entropy")
    pred_nomask_weight: float = key(0.0, "weight of the unmasked frames' cross-entropy")
    loss_weights: list[float] | None = key(None, "[weight of the conv features' squared mean]")
    speaker_loss_weight: float = key(0.0, "disentangling: weight of the speaker adversary's cross-entropy, per "
                                          "utterance (0: HuBERT exactly)")
    pitch_loss_weight: float = key(0.0, "disentangling: weight of the pitch output's L1(log F0) + voicing "
                                        "cross-entropy, per frame (0: HuBERT exactly)")


@dataclass(frozen=True)
class CtcCriterionConfig:
    _name: str = "ctc"
    zero_infinity: bool = key(False, "ignore utterances too short for their transcript")


@dataclass(frozen=True)
class CrossEntropyCriterionConfig:
    _name: str = "cross_entropy"
    label_smoothing: float = key(0.0, "share of the target probability spread over the other letters")


@dataclass(frozen=True)
class LabelSmoothedCrossEntropyConfig(CrossEntropyCriterionConfig):
    _name: str = "label_smoothed_cross_entropy"


@dataclass(frozen=True)
class HubertModelConfig(HubertConfig):
    """``model._name=hubert``: the network of ``config/model.py``."""

    _name: str = "hubert"


@dataclass(frozen=True)
class HubertCtcModelConfig:
    """``model._name=hubert_ctc``: a pretrained checkpoint, and what fine-tuning changes in
    it. The encoder keys mean what the pretraining network's do; the dropouts, the conv
    stack's gradient and mask_prob have fairseq's fine-tuning defaults (``HubertAsrConfig``)."""

    _name: str = "hubert_ctc"
    w2v_path: str = key(MISSING, "the pretrained checkpoint (any format hubertkit reads)")
    no_pretrained_weights: bool = key(False, "start the encoder from random weights (a baseline)")
    apply_mask: bool = key(False, "mask the encoder's input while fine-tuning")
    layerdrop: float = key(0.0, "probability of skipping a whole Transformer layer in training")
    final_dropout: float = key(0.0, "dropout before the output projection", check=UNIT_INTERVAL)
    freeze_finetune_updates: int = key(0, "updates during which only the output projection trains")
    dropout: float = same_as(HubertConfig, "dropout", 0.0)
    attention_dropout: float = same_as(HubertConfig, "attention_dropout", 0.0)
    activation_dropout: float = same_as(HubertConfig, "activation_dropout")
    dropout_input: float = same_as(HubertConfig, "dropout_input")
    feature_grad_mult: float = same_as(HubertConfig, "feature_grad_mult", 0.0)
    mask_length: int = same_as(HubertConfig, "mask_length")
    mask_prob: float = same_as(HubertConfig, "mask_prob", 0.5)
    mask_selection: str = same_as(HubertConfig, "mask_selection")
    mask_other: float = same_as(HubertConfig, "mask_other")
    no_mask_overlap: bool = same_as(HubertConfig, "no_mask_overlap")
    mask_channel_length: int = same_as(HubertConfig, "mask_channel_length")
    mask_channel_prob: float = same_as(HubertConfig, "mask_channel_prob")
    mask_channel_selection: str = same_as(HubertConfig, "mask_channel_selection")
    mask_channel_other: float = same_as(HubertConfig, "mask_channel_other")
    no_mask_channel_overlap: bool = same_as(HubertConfig, "no_mask_channel_overlap")

    def encoder_changes(self) -> dict:
        """The pretrained network's keys that fine-tuning sets (fairseq's HubertEncoder)."""
        names = {f.name for f in dataclasses.fields(HubertConfig)}
        changes = {k: v for k, v in dataclasses.asdict(self).items() if k in names}
        return {**changes, "encoder_layerdrop": self.layerdrop}


@dataclass(frozen=True)
class UnitAsrModelConfig:
    """``model._name=unit_bart`` (BART, cross-entropy) or ``unit_ctc`` (the CTC baseline):
    units to letters; fairseq's transformer key names."""

    _name: str = "unit_bart"
    encoder_embed_dim: int = key(768, "width of the encoder and decoder")
    encoder_layers: int = key(6, "encoder layers")
    encoder_ffn_embed_dim: int = key(3072, "inner width of the encoder's feed-forward blocks")
    encoder_attention_heads: int = key(12, "attention heads per encoder layer")
    decoder_layers: int = key(6, "decoder layers (unit_bart)")
    decoder_ffn_embed_dim: int = key(3072, "inner width of the decoder's feed-forward blocks")
    decoder_attention_heads: int = key(12, "attention heads per decoder layer")
    dropout: float = key(0.1, "dropout in the layers")
    attention_dropout: float = key(0.1, "dropout of the attention weights")
    activation_dropout: float = key(0.0, "dropout after the feed-forward activation")
    max_source_positions: int = key(1024, "longest unit sequence the model takes")
    max_target_positions: int = key(1024, "longest transcript, in letters")
    ctc_upsample: int = key(2, "unit_ctc: output frames per (deduplicated) unit")
    beam: int = key(5, "unit_bart: beam width saved as the model's decoding default")


# group -> _name -> its dataclass; the first name of a group is its default.
SECTIONS: dict[str, dict[str, type]] = {
    "task": {"hubert_pretraining": PretrainingTaskConfig, "unit_asr": UnitAsrTaskConfig},
    "model": {"hubert": HubertModelConfig, "hubert_ctc": HubertCtcModelConfig,
              "unit_bart": UnitAsrModelConfig, "unit_ctc": UnitAsrModelConfig},
    "criterion": {"hubert": HubertCriterionConfig, "ctc": CtcCriterionConfig, "cross_entropy": CrossEntropyCriterionConfig,
                  "label_smoothed_cross_entropy": LabelSmoothedCrossEntropyConfig},
    "optimizer": {"adam": AdamConfig},
    "lr_scheduler": {"polynomial_decay": PolynomialDecayConfig, "tri_stage": TriStageConfig},
}
# model._name -> the criteria it trains with, and its task._name
PAIRS: dict[str, tuple[tuple[str, ...], str]] = {
    "hubert": (("hubert",), "hubert_pretraining"), "hubert_ctc": (("ctc",), "hubert_pretraining"),
    "unit_ctc": (("ctc",), "unit_asr"), "unit_bart": (("cross_entropy", "label_smoothed_cross_entropy"), "unit_asr"),
}
GROUPS: dict[str, type] = {
    "common": CommonConfig, "task": PretrainingTaskConfig, "dataset": DatasetConfig, "criterion": HubertCriterionConfig,
    "optimization": OptimizationConfig, "optimizer": AdamConfig, "lr_scheduler": PolynomialDecayConfig,
    "checkpoint": CheckpointConfig, "distributed_training": DistributedTrainingConfig, "model": HubertModelConfig,
}


@dataclass(frozen=True)
class TrainConfig:
    """One run: a section per group (the ``_name``-ed ones vary with their name)."""

    common: CommonConfig = field(default_factory=CommonConfig)
    task: Any = field(default_factory=PretrainingTaskConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    criterion: Any = field(default_factory=HubertCriterionConfig)
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)
    optimizer: Any = field(default_factory=AdamConfig)
    lr_scheduler: Any = field(default_factory=PolynomialDecayConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    distributed_training: DistributedTrainingConfig = field(default_factory=DistributedTrainingConfig)
    model: Any = field(default_factory=HubertModelConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def register_model(name: str, section: type, criteria: tuple[str, ...], task: str = "hubert_pretraining") -> None:
    """A new ``model._name`` (a new training objective's): its keys, criteria and task."""
    SECTIONS["model"][name] = section
    PAIRS[name] = (tuple(criteria), task)


def all_sections() -> dict[str, list[type]]:
    """Every group's dataclasses: its default one, then each ``_name``'s."""
    return {g: list(dict.fromkeys([cls, *SECTIONS.get(g, {}).values()])) for g, cls in GROUPS.items()}


def section_class(group: str, name: str | None) -> type:
    return GROUPS[group] if name is None or group not in SECTIONS else SECTIONS[group][name]
