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

from hubertkit.config.keys import AT_LEAST_1, EPOCHS, key
from hubertkit.config.model import HubertConfig


@dataclass(frozen=True)
class CommonConfig:
    seed: int = 1
    fp16: bool = False
    bf16: bool = False  # hubertkit: bf16 autocast (the default on GPUs that support it)
    log_interval: int = key(100, check=AT_LEAST_1)
    log_format: str | None = None  # "json": one JSON line per log interval on stdout; else a progress bar
    tensorboard_logdir: str | None = None
    wandb_project: str | None = None


@dataclass(frozen=True)
class PretrainingTaskConfig:
    """``task._name=hubert_pretraining``: audio manifests and frame labels."""

    _name: str = "hubert_pretraining"
    data: str = MISSING  # directory of {split}.tsv
    label_dir: str | None = None  # directory of {split}.{label} and dict.{label}.txt (default: data)
    labels: list[str] = field(default_factory=lambda: ["ltr"])
    label_rate: float = -1.0  # fairseq's YAMLs: ${model.label_rate}; -1: take model.label_rate
    sample_rate: int = key(16000, only="HuBERT's conv stack and hubertkit's audio reading are for 16 kHz audio")
    max_sample_size: int | None = None
    min_sample_size: int | None = None
    max_keep_size: int | None = None
    pad_audio: bool = False
    random_crop: bool = True
    normalize: bool = False
    single_target: bool = False
    # hubertkit: utterances whose audio and labels differ by more than 0.1 s are an
    # error (fairseq only warns); true drops them instead
    skip_misaligned: bool = False
    # disentangling variant: pitch shards (dump-pitch) and speaker files (speakers)
    feat_dir: str | None = None
    fine_tuning: bool = False  # fairseq's flag: must be true exactly when model._name=hubert_ctc


@dataclass(frozen=True)
class UnitAsrTaskConfig:
    """``task._name=unit_asr``: units JSONL files and their transcripts."""

    _name: str = "unit_asr"
    data: str = MISSING  # the train split's units JSONL
    valid_data: str | None = None  # the valid split's units JSONL
    texts: str = MISSING  # transcripts of both splits (utterance<TAB>text, or JSON lines)
    num_units: int | None = None  # the k-means K; default: the largest unit id of train + 1
    label_rate: float = 50.0  # frame rate of the units
    sample_rate: int = 16000


@dataclass(frozen=True)
class DatasetConfig:
    num_workers: int = key(1, check=(lambda v: v >= 0, ">= 0"))
    max_tokens: int | None = key(None, check=(lambda v: v is None or v >= 1, ">= 1 (or null)"))  # this or batch_size
    batch_size: int | None = None
    train_subset: str = "train"
    valid_subset: str = "valid"
    validate_interval: int = key(1, check=EPOCHS)
    validate_interval_updates: int = 0
    validate_after_updates: int = 0
    disable_validation: bool = False
    skip_invalid_size_inputs_valid_test: bool = key(
        False, no_effect="an utterance longer than dataset.max_tokens is an error")
    required_batch_size_multiple: int = key(1, only="batch sizes are not rounded to a multiple (fairseq's default: 8)")


@dataclass(frozen=True)
class OptimizationConfig:
    max_update: int = key(0, check=(lambda v: v >= 0, ">= 0 (0: no limit; max_epoch ends the run)"))
    max_epoch: int = 0
    lr: list[float] = key(factory=lambda: [0.25], check=(lambda v: len(v) == 1 and v[0] > 0, "one positive learning "
                                                         "rate in a list (fairseq's per-epoch lists are not implemented)"))
    clip_norm: float = key(0.0, check=(lambda v: v >= 0, ">= 0 (0: no clipping)"))
    update_freq: list[int] = key(factory=lambda: [1], check=(lambda v: len(v) == 1 and v[0] >= 1, "one integer >= 1 "
                                                             "in a list (fairseq's per-epoch lists are not implemented)"))
    sentence_avg: bool = False  # CTC: normalise gradients per utterance, not per frame

    @property
    def update_limit(self) -> float:
        """``max_update`` as a bound: 0 means none (as fairseq), and ``max_epoch`` ends the run."""
        return self.max_update or math.inf


@dataclass(frozen=True)
class AdamConfig:
    _name: str = "adam"
    adam_betas: Any = "(0.9,0.999)"  # fairseq writes a tuple as a string
    adam_eps: float = 1e-8
    weight_decay: float = 0.0

    @property
    def betas(self) -> tuple[float, float]:
        betas = self.adam_betas
        if isinstance(betas, str):
            betas = [v for v in betas.strip("()[] ").split(",") if v.strip()]
        return tuple(float(b) for b in betas)


@dataclass(frozen=True)
class PolynomialDecayConfig:
    _name: str = "polynomial_decay"
    warmup_updates: int = 0
    end_learning_rate: float = 0.0
    power: float = 1.0
    total_num_update: int = II("optimization.max_update")


@dataclass(frozen=True)
class TriStageConfig:
    """Fine-tuning: warm-up, hold, exponential decay."""

    _name: str = "tri_stage"
    warmup_steps: int = 0
    hold_steps: int = 0
    decay_steps: int = 0
    phase_ratio: list[float] | None = None  # fractions of max_update, instead of the steps
    init_lr_scale: float = 0.01
    final_lr_scale: float = 0.01


@dataclass(frozen=True)
class CheckpointConfig:
    save_dir: str = "checkpoints"
    # the default: checkpoint_last.pt in save_dir when it is there; any other value, that file
    restore_file: str = "checkpoint_last.pt"
    # start from this checkpoint's weights (any format hubertkit reads) with a fresh optimizer,
    # schedule, data order and meters, unless save_dir already holds checkpoint_last.pt
    finetune_from_model: str | None = None
    reset_optimizer: bool = False  # restore_file's optimizer state and update count are not loaded
    reset_lr_scheduler: bool = False  # as fairseq's; hubertkit's schedules are functions of the update count
    reset_dataloader: bool = False  # the run starts at epoch 1, batch 0
    reset_meters: bool = False  # the best validation loss, audio hours and skipped-update counts start anew
    save_interval: int = key(1, check=EPOCHS)  # checkpoint_last.pt at every N-th epoch's end
    save_interval_updates: int = 0
    keep_interval_updates: int = -1
    no_epoch_checkpoints: bool = key(True, only="hubertkit writes no per-epoch checkpoints (fairseq's default: false)")
    no_save: bool = False
    best_checkpoint_metric: str = "loss"
    maximize_best_checkpoint_metric: bool = False
    # hubertkit: stop after this many consecutive updates with a non-finite loss
    max_nonfinite_updates: int = key(10, check=AT_LEAST_1)


@dataclass(frozen=True)
class DistributedTrainingConfig:
    # fairseq's default counts the visible GPUs; hubertkit's world is torchrun's (or submit's),
    # and a configured size that differs is warned about
    distributed_world_size: int = key(1, departs="the launcher sets the world size")
    distributed_backend: str = "nccl"
    ddp_backend: str = "pytorch_ddp"  # "fully_sharded": FSDP (for large/xlarge); any other: DDP
    distributed_port: int = key(-1, no_effect="torchrun sets the rendezvous")
    nprocs_per_node: int = key(1, no_effect="torchrun sets the processes per node")
    find_unused_parameters: bool = False


@dataclass(frozen=True)
class HubertCriterionConfig:
    _name: str = "hubert"
    pred_masked_weight: float = 1.0
    pred_nomask_weight: float = 0.0
    loss_weights: list[float] | None = None  # [feature penalty weight]
    # disentangling variant: weights of the speaker adversary's cross-entropy and of the
    # pitch output's L1(log F0) + voicing BCE, each per utterance / frame (0: HuBERT exactly)
    speaker_loss_weight: float = 0.0
    pitch_loss_weight: float = 0.0


@dataclass(frozen=True)
class CtcCriterionConfig:
    _name: str = "ctc"
    zero_infinity: bool = False  # ignore utterances too short for their transcript


@dataclass(frozen=True)
class CrossEntropyCriterionConfig:
    _name: str = "cross_entropy"
    label_smoothing: float = 0.0


@dataclass(frozen=True)
class LabelSmoothedCrossEntropyConfig(CrossEntropyCriterionConfig):
    _name: str = "label_smoothed_cross_entropy"


@dataclass(frozen=True)
class HubertModelConfig(HubertConfig):
    """``model._name=hubert``: the network of ``config/model.py``."""

    _name: str = "hubert"


_D = HubertConfig  # fine-tuning's other encoder keys default as the pretraining network's


@dataclass(frozen=True)
class HubertCtcModelConfig:
    """``model._name=hubert_ctc``: a pretrained checkpoint, and what fine-tuning changes in it."""

    _name: str = "hubert_ctc"
    w2v_path: str = MISSING
    no_pretrained_weights: bool = False
    apply_mask: bool = False
    layerdrop: float = 0.0
    final_dropout: float = 0.0
    freeze_finetune_updates: int = 0
    dropout: float = 0.0  # fairseq's HubertAsrConfig: its own defaults, not the pretraining network's
    attention_dropout: float = 0.0
    activation_dropout: float = _D.activation_dropout
    dropout_input: float = _D.dropout_input
    feature_grad_mult: float = 0.0
    mask_length: int = _D.mask_length
    mask_prob: float = 0.5
    mask_selection: str = _D.mask_selection
    mask_other: float = _D.mask_other
    no_mask_overlap: bool = _D.no_mask_overlap
    mask_channel_length: int = _D.mask_channel_length
    mask_channel_prob: float = _D.mask_channel_prob
    mask_channel_selection: str = _D.mask_channel_selection
    mask_channel_other: float = _D.mask_channel_other
    no_mask_channel_overlap: bool = _D.no_mask_channel_overlap

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
    encoder_embed_dim: int = 768
    encoder_layers: int = 6
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    decoder_layers: int = 6
    decoder_ffn_embed_dim: int = 3072
    decoder_attention_heads: int = 12
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    max_source_positions: int = 1024
    max_target_positions: int = 1024
    ctc_upsample: int = 2  # unit_ctc: output frames per (deduplicated) unit
    beam: int = 5  # unit_bart: beam width saved as the model's decoding default


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
