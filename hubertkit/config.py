"""Training configuration: fairseq's config groups and key names, as typed dataclasses.

A run is described by a YAML file with the groups of fairseq's HuBERT configs
(``common``, ``task``, ``dataset``, ``criterion``, ``optimization``, ``optimizer``,
``lr_scheduler``, ``checkpoint``, ``distributed_training``, ``model``) plus
``key=value`` overrides in hydra's syntax. Every default lives in the dataclasses below
(and ``model/config.py``); an unknown key is an error that names the closest valid ones.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from hubertkit.errors import HubertkitError
from hubertkit.model.config import HubertConfig
from hubertkit.train.loss import CriterionConfig

if TYPE_CHECKING:
    from hubertkit.asr.unit_vocab import UnitVocab
    from hubertkit.model.unit_asr import UnitAsrArch


@dataclass
class CommonConfig:
    seed: int = 1337
    fp16: bool = False
    bf16: bool = False  # hubertkit: bf16 autocast (the default on GPUs that support it)
    log_interval: int = 100
    log_format: str = "tqdm"
    tensorboard_logdir: str | None = None
    wandb_project: str | None = None


@dataclass
class TaskConfig:
    _name: str = "hubert_pretraining"
    data: str = "???"  # directory of {split}.tsv
    label_dir: str | None = None  # directory of {split}.{label} and dict.{label}.txt (default: data)
    labels: list[str] = field(default_factory=lambda: ["km"])
    label_rate: Any = "${model.label_rate}"
    sample_rate: int = 16000
    max_sample_size: int | None = 250000
    min_sample_size: int | None = 32000
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
    fine_tuning: bool = False  # fairseq's flag; hubertkit fine-tunes when model._name is hubert_ctc
    # unit_asr (model._name unit_bart or unit_ctc): data is the train split's units JSONL
    valid_data: str | None = None  # the valid split's units JSONL
    texts: str | None = None  # transcripts of both splits (utterance<TAB>text, JSONL or .wrd-free tables)
    num_units: int | None = None  # the k-means K; default: the largest unit id of train + 1


@dataclass
class DatasetConfig:
    num_workers: int = 2
    max_tokens: int | None = 1400000
    batch_size: int | None = None
    train_subset: str = "train"
    valid_subset: str = "valid"
    validate_interval: int = 1
    validate_interval_updates: int = 0
    validate_after_updates: Any = 0
    disable_validation: bool = False
    skip_invalid_size_inputs_valid_test: bool = True
    required_batch_size_multiple: int = 8


@dataclass
class OptimizationConfig:
    max_update: int = 400000
    max_epoch: int = 0
    lr: list[float] = field(default_factory=lambda: [0.0005])
    clip_norm: float = 10.0
    update_freq: list[int] = field(default_factory=lambda: [1])
    sentence_avg: bool = False  # CTC: normalise gradients per utterance, not per frame


@dataclass
class OptimizerConfig:
    _name: str = "adam"
    adam_betas: Any = "(0.9,0.98)"
    adam_eps: float = 1e-6
    weight_decay: float = 0.01


@dataclass
class LRSchedulerConfig:
    _name: str = "polynomial_decay"
    warmup_updates: int = 32000
    end_learning_rate: float = 0.0
    power: float = 1.0
    total_num_update: Any = "${optimization.max_update}"
    # tri_stage (fine-tuning): warm-up, hold, exponential decay
    warmup_steps: int = 0
    hold_steps: int = 0
    decay_steps: int = 0
    phase_ratio: list[float] | None = None
    init_lr_scale: float = 0.01
    final_lr_scale: float = 0.01


@dataclass
class CheckpointConfig:
    save_dir: str = "checkpoints"
    restore_file: str = "checkpoint_last.pt"
    save_interval_updates: int = 25000
    keep_interval_updates: int = 1
    no_epoch_checkpoints: bool = True
    no_save: bool = False
    best_checkpoint_metric: str = "loss"
    maximize_best_checkpoint_metric: bool = False
    # hubertkit: stop after this many consecutive updates with a non-finite loss
    max_nonfinite_updates: int = 10


@dataclass
class DistributedTrainingConfig:
    distributed_world_size: int = 1
    distributed_backend: str = "nccl"
    ddp_backend: str = "pytorch_ddp"  # "fully_sharded": FSDP (for large/xlarge); any other: DDP
    distributed_port: int = -1
    nprocs_per_node: int = 1
    find_unused_parameters: bool = False


@dataclass
class CriterionSection(CriterionConfig):
    _name: str = "hubert"  # or "ctc" (fine-tuning)
    zero_infinity: bool = False  # ctc: ignore utterances too short for their transcript
    label_smoothing: float = 0.0  # label_smoothed_cross_entropy (unit_bart)


@dataclass
class ModelSection(HubertConfig):
    _name: str = "hubert"  # or "hubert_ctc": fine-tuning, with the keys below
    label_rate: Any = 50.0  # ??? in fairseq's YAMLs: must be set on the command line
    # hubert_ctc: the pretrained checkpoint and what fine-tuning changes in it
    w2v_path: str | None = None
    no_pretrained_weights: bool = False
    apply_mask: bool = False
    layerdrop: float = 0.0
    final_dropout: float = 0.0
    freeze_finetune_updates: int = 0
    # unit_bart / unit_ctc: the encoder_* keys above size the encoder; these the rest
    decoder_layers: int = 6
    decoder_ffn_embed_dim: int = 3072
    decoder_attention_heads: int = 12
    max_source_positions: int = 1024
    max_target_positions: int = 1024
    ctc_upsample: int = 2  # unit_ctc: output frames per (deduplicated) unit
    beam: int = 5  # unit_bart: beam width saved as the model's decoding default


@dataclass
class TrainConfig:
    common: CommonConfig = field(default_factory=CommonConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    criterion: CriterionSection = field(default_factory=CriterionSection)
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    lr_scheduler: LRSchedulerConfig = field(default_factory=LRSchedulerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    distributed_training: DistributedTrainingConfig = field(default_factory=DistributedTrainingConfig)
    model: ModelSection = field(default_factory=ModelSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def model_config(self, num_classes: list[int], num_speakers: int = 0) -> HubertConfig:
        names = {f.name for f in dataclasses.fields(HubertConfig)}
        d = {k: v for k, v in dataclasses.asdict(self.model).items() if k in names}
        return HubertConfig(**{**d, "num_classes": num_classes, "num_speakers": num_speakers}).validate()

    def unit_asr_arch(self, vocab: UnitVocab) -> UnitAsrArch:
        from hubertkit.model.unit_asr import UnitAsrArch

        names = {f.name for f in dataclasses.fields(UnitAsrArch)} - {"arch", "symbols", "num_units"}
        return UnitAsrArch(arch=self.model._name.removeprefix("unit_"), symbols=list(vocab.symbols),
                           num_units=vocab.num_units, **{k: getattr(self.model, k) for k in names})

    @property
    def fine_tuning(self) -> bool:
        return self.model._name == "hubert_ctc"

    @property
    def unit_asr(self) -> bool:
        return self.model._name in ("unit_bart", "unit_ctc")

    @property
    def adam_betas(self) -> tuple[float, float]:
        betas = self.optimizer.adam_betas
        if isinstance(betas, str):
            betas = [float(v) for v in betas.strip("()[] ").split(",") if v.strip()]
        return tuple(float(b) for b in betas)


# Groups of fairseq's YAMLs that only configure hydra or logging tools hubertkit does not use.
IGNORED_GROUPS = ("hydra",)
KNOWN_NAMES = {
    "task": ("hubert_pretraining", "unit_asr"),
    "model": ("hubert", "hubert_ctc", "unit_bart", "unit_ctc"),
    "criterion": ("hubert", "ctc", "cross_entropy", "label_smoothed_cross_entropy"),
    "optimizer": ("adam",),
    "lr_scheduler": ("polynomial_decay", "tri_stage"),
}

CRITERIA = {"hubert": ("hubert",), "hubert_ctc": ("ctc",), "unit_ctc": ("ctc",),
            "unit_bart": ("cross_entropy", "label_smoothed_cross_entropy")}


def valid_keys() -> list[str]:
    out = []
    for group in dataclasses.fields(TrainConfig):
        out += [f"{group.name}.{f.name}" for f in dataclasses.fields(group.default_factory())]
    return out


def _unknown(key: str) -> HubertkitError:
    close = difflib.get_close_matches(key, valid_keys(), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return HubertkitError(f"unknown config key {key!r}{hint}")


def _merge(tree: dict, overrides: dict, prefix: str = "") -> None:
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(tree.get(k), dict):
            _merge(tree[k], v, f"{prefix}{k}.")
        else:
            tree[k] = v


def _set(tree: dict, dotted: str, value: Any) -> None:
    node = tree
    *parents, last = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise _unknown(dotted)
    node[last] = value


def parse_override(text: str) -> tuple[str, Any]:
    """hydra's ``key=value`` (and ``+key=value``), the value read as YAML."""
    if "=" not in text:
        raise HubertkitError(f"override {text!r} is not key=value")
    key, value = text.split("=", 1)
    key = key.lstrip("+")
    try:
        parsed = yaml.safe_load(value) if value != "" else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


_INTERP = re.compile(r"^\$\{([\w.]+)\}$")


def _resolve(tree: dict) -> None:
    """``${group.key}`` references, as omegaconf resolves them in fairseq's YAMLs."""
    def lookup(dotted):
        node = tree
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                raise HubertkitError(f"config reference ${{{dotted}}} points at no key")
            node = node[part]
        return node

    for _ in range(5):  # references to references
        changed = False
        for group in tree.values():
            if not isinstance(group, dict):
                continue
            for k, v in group.items():
                m = _INTERP.match(v) if isinstance(v, str) else None
                if m:
                    group[k] = lookup(m.group(1))
                    changed = True
        if not changed:
            return


_SCALARS = {"float": float, "int": int, "str": str}


def _coerce(key: str, value: Any, annotation: str) -> Any:
    """YAML 1.1 reads ``1e-06`` as a string and users type ``lr=1e-3``: convert values to
    the field's declared type, or say which key has the wrong kind of value."""
    base = annotation.replace(" | None", "")
    if value is None or base == "Any":
        return value
    try:
        if base == "bool":
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            if not isinstance(value, bool):
                raise ValueError(value)
            return value
        if base in _SCALARS:
            if base == "int" and isinstance(value, (str, float)) and float(value) != int(float(value)):
                raise ValueError(value)
            return _SCALARS[base](float(value)) if base == "int" else _SCALARS[base](value)
        if base.startswith("list["):
            item = base[5:-1]
            items = value if isinstance(value, list) else [value]
            return [_SCALARS[item](float(v)) if item == "int" else _SCALARS[item](v) for v in items]
    except (TypeError, ValueError):
        raise HubertkitError(f"config key {key} expects {annotation}, got {value!r}") from None
    return value


def build_config(tree: dict) -> TrainConfig:
    """A TrainConfig from a nested dict (YAML + overrides), checking every key."""
    defaults = TrainConfig().to_dict()
    tree = {k: v for k, v in tree.items() if k not in IGNORED_GROUPS}
    for group, values in tree.items():
        if group not in defaults:
            raise _unknown(group)
        if not isinstance(values, dict):
            raise HubertkitError(f"config group {group!r} must be a mapping of keys")
        for key in values:
            if key not in defaults[group]:
                raise _unknown(f"{group}.{key}")
    _merge(defaults, tree)
    _resolve(defaults)
    for group, names in KNOWN_NAMES.items():
        if defaults[group]["_name"] not in names:
            raise HubertkitError(f"{group}._name={defaults[group]['_name']!r} is not supported; hubertkit has {', '.join(names)}")
    missing = [f"{g}.{k}" for g, vals in defaults.items() for k, v in vals.items() if v == "???"]
    if missing:
        raise HubertkitError(f"required config key(s) not set: {', '.join(missing)} (pass them as key=value)")
    cls = {f.name: f.default_factory().__class__ for f in dataclasses.fields(TrainConfig)}
    for g, vals in defaults.items():
        types = {f.name: f.type for f in dataclasses.fields(cls[g])}
        for k, v in vals.items():
            vals[k] = _coerce(f"{g}.{k}", v, types[k])
    cfg = TrainConfig(**{g: cls[g](**vals) for g, vals in defaults.items()})
    _check_ranges(cfg)
    cfg.model.validate()
    criteria = CRITERIA[cfg.model._name]
    if cfg.criterion._name not in criteria:
        raise HubertkitError(f"model._name={cfg.model._name} needs criterion._name={' or '.join(criteria)}, "
                             f"got {cfg.criterion._name}")
    if cfg.unit_asr != (cfg.task._name == "unit_asr"):
        raise HubertkitError(f"model._name={cfg.model._name} and task._name={cfg.task._name} do not go together: "
                             "unit_bart and unit_ctc are the models of task unit_asr")
    if cfg.unit_asr and not cfg.task.texts:
        raise HubertkitError("task unit_asr needs task.texts=FILE: the transcripts of the utterances in the units files")
    if cfg.fine_tuning and not cfg.model.w2v_path:
        raise HubertkitError("fine-tuning needs model.w2v_path=CHECKPOINT: the pretrained model (its architecture, and "
                             "its weights unless model.no_pretrained_weights=true)")
    return cfg


def _positive_list(v) -> bool:
    return bool(v) and all(x > 0 for x in v)


# Values that have a range, and what they must be: refused at load time, not at the first
# update (or never: a zero log_interval divides by zero, update_freq=[0] never steps).
RANGES = {
    "optimization.lr": (_positive_list, "a non-empty list of positive learning rates"),
    "optimization.update_freq": (lambda v: bool(v) and all(isinstance(x, int) and x >= 1 for x in v), "a list of integers >= 1"),
    "optimization.max_update": (lambda v: v >= 0, ">= 0"),
    "optimization.clip_norm": (lambda v: v >= 0, ">= 0 (0: no clipping)"),
    "common.log_interval": (lambda v: v >= 1, ">= 1"),
    "dataset.num_workers": (lambda v: v >= 0, ">= 0"),
    "dataset.max_tokens": (lambda v: v is None or v >= 1, ">= 1 (or null)"),
    "model.mask_prob": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "model.mask_length": (lambda v: v >= 1, ">= 1"),
    "model.dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "model.attention_dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "model.encoder_layerdrop": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "checkpoint.max_nonfinite_updates": (lambda v: v >= 1, ">= 1"),
}


def _check_ranges(cfg: TrainConfig) -> None:
    for key, (ok, what) in RANGES.items():
        group, name = key.split(".")
        section = getattr(cfg, group)
        if hasattr(section, name) and not ok(getattr(section, name)):
            raise HubertkitError(f"{key}={getattr(section, name)!r} is out of range: it must be {what}")


def config_dir_default() -> Path:
    """The configs shipped inside the package (fairseq's ``examples/hubert/config/pretrain``
    and ours), so an installed wheel finds them as a clone does."""
    return Path(__file__).resolve().parent / "configs"


def read_yaml_mapping(path: str | os.PathLike, what: str = "config") -> dict:
    """A YAML file that must hold a mapping; malformed YAML, other encodings and other
    shapes are errors naming the file (and the line, where YAML says it)."""
    path = Path(path)
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise HubertkitError(f"{what} {path} is not UTF-8 text (byte {e.start}): save it as UTF-8") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise HubertkitError(f"{what} {path} is not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise HubertkitError(f"{what} {path} must be a mapping of keys to values, not a {type(tree).__name__}")
    return tree


def _read_yaml(path: Path, seen: tuple = ()) -> dict:
    """A config file; ``defaults: [NAME, ...]`` first merges those configs of the same
    directory (hydra's list syntax, config names only), so a variant lists only what it
    changes."""
    tree = read_yaml_mapping(path)
    parents = tree.pop("defaults", None) or []
    if not isinstance(parents, list) or not all(isinstance(n, str) for n in parents):
        raise HubertkitError(f"{path}: 'defaults' must be a list of config names, got {parents!r}")
    base: dict = {}
    for name in parents:
        parent = path.parent / f"{name}.yaml"
        if not parent.is_file() or parent in seen:
            raise HubertkitError(f"{path}: defaults entry {name!r} " + ("is circular" if parent in seen else f"does not exist ({parent})"))
        _merge(base, _read_yaml(parent, seen + (path,)))
    _merge(base, tree)
    return base


def load_config(config_name: str, overrides: list[str] = (), config_dir: str | os.PathLike | None = None) -> TrainConfig:
    """``--config-dir D --config-name NAME key=value ...`` as fairseq's hydra_train.py."""
    directory = Path(config_dir) if config_dir else config_dir_default()
    path = directory / (config_name if config_name.endswith(".yaml") else f"{config_name}.yaml")
    if not path.is_file():
        available = sorted(p.stem for p in directory.glob("*.yaml")) if directory.is_dir() else []
        raise HubertkitError(f"config {path} does not exist" + (f"; available: {', '.join(available)}" if available else ""))
    tree = _read_yaml(path)
    for text in overrides:
        key, value = parse_override(text)
        if key.split(".")[0] in IGNORED_GROUPS:
            continue
        _set(tree, key, value)
    return build_config(tree)
