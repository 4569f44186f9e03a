import dataclasses
import json
from pathlib import Path

import pytest

from hubertkit.config import config_dir_default, load_config, parse_override, read_yaml_mapping
from hubertkit.config import train as train_config
from hubertkit.config.load import NO_EFFECT, UNSUPPORTED, _merge, _read_yaml
from hubertkit.config.train import section_class
from hubertkit.errors import HubertkitError

REQUIRED = ["task.data=/d", "task.label_dir=/l", "model.label_rate=100"]


@pytest.mark.parametrize("name", ["hubert_base_librispeech", "hubert_large_librivox", "hubert_xlarge_librivox"])
def test_shipped_fairseq_configs_load(name):
    cfg = load_config(name, REQUIRED)
    assert cfg.task.label_rate == 100  # ${model.label_rate}
    assert cfg.lr_scheduler.total_num_update == cfg.optimization.max_update == 400000
    assert cfg.optimizer.betas == (0.9, 0.98) and cfg.optimizer.adam_eps == 1e-6
    assert cfg.model.mask_prob == 0.8 and cfg.model.untie_final_proj


def test_published_hyperparameters():
    base = load_config("hubert_base_librispeech", REQUIRED)
    large = load_config("hubert_large_librivox", REQUIRED)
    assert (base.optimization.lr, base.optimization.clip_norm, base.dataset.max_tokens) == ([0.0005], 10.0, 1400000)
    assert (large.optimization.lr, large.optimization.clip_norm) == ([0.0015], 1.0)
    assert (base.model.encoder_layers, large.model.encoder_layers) == (12, 24)
    assert large.model.layer_norm_first and large.task.normalize and not base.task.normalize


def test_unknown_key_names_the_closest():
    with pytest.raises(HubertkitError, match="unknown config key 'model.mask_porb'; did you mean model.mask_prob"):
        load_config("hubert_base_librispeech", REQUIRED + ["model.mask_porb=0.5"])
    with pytest.raises(HubertkitError, match="unknown config group 'optimisation'; did you mean optimization"):
        load_config("hubert_base_librispeech", REQUIRED + ["optimisation.lr=[1]"])


def test_required_keys_and_hydra_group():
    with pytest.raises(HubertkitError, match="model.label_rate"):
        load_config("hubert_base_librispeech", ["task.data=/d", "task.label_dir=/l"])
    cfg = load_config("hubert_base_librispeech", REQUIRED + ["hydra.run.dir=/tmp/x", "+task.labels=['km','ph']"])
    assert cfg.task.labels == ["km", "ph"]


def test_override_values_are_yaml():
    assert parse_override("optimization.lr=[0.001]") == ("optimization.lr", [0.001])
    assert parse_override("task.labels=[\"km\"]") == ("task.labels", ["km"])
    assert parse_override("common.fp16=false") == ("common.fp16", False)
    with pytest.raises(HubertkitError, match="not key=value"):
        parse_override("common.fp16")


def test_missing_config_lists_available(tmp_path):
    with pytest.raises(HubertkitError, match="available: .*hubert_base_librispeech"):
        load_config("hubert_base", REQUIRED)
    (tmp_path / "mine.yaml").write_text("model:\n  label_rate: 50\n  encoder_layers: 2\ntask:\n  data: /d\n"
                                        "optimization:\n  max_update: 10\n")
    cfg = load_config("mine", [], config_dir=tmp_path)
    assert cfg.model.encoder_layers == 2 and cfg.task.label_dir is None



def test_defaults_list_merges_the_named_configs(tmp_path):
    cfg = load_config("disentangle_hubert_base_librispeech", ["task.data=d", "task.label_dir=l", "task.feat_dir=f",
                                                               "model.label_rate=100"])
    base = load_config("hubert_base_librispeech", ["task.data=d", "task.label_dir=l", "model.label_rate=100"])
    assert cfg.model.speaker_layer == 6 and cfg.model.pitch_layer == 12 and cfg.task.feat_dir == "f"
    assert cfg.optimization == base.optimization and cfg.model.encoder_layers == base.model.encoder_layers
    with pytest.raises(HubertkitError, match="task.feat_dir"):
        load_config("disentangle_demo", ["task.data=d", "task.label_dir=l"])
    (tmp_path / "a.yaml").write_text("defaults: [b]\n")
    (tmp_path / "b.yaml").write_text("defaults: [a]\n")
    with pytest.raises(HubertkitError, match="circular"):
        load_config("a", [], tmp_path)
    (tmp_path / "c.yaml").write_text("defaults: [nope]\n")
    with pytest.raises(HubertkitError, match="does not exist"):
        load_config("c", [], tmp_path)


@pytest.mark.parametrize("text,message", [("task: {data: [x\n", "is not valid YAML at line"), ("[1, 2]\n", "must be a mapping")])
def test_malformed_train_config_is_an_error_naming_the_file(tmp_path, text, message):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(HubertkitError, match=f"bad.yaml {message}"):
        load_config("bad", [], tmp_path)


@pytest.mark.parametrize("override", ["optimization.update_freq=[0]", "optimization.lr=[]", "common.log_interval=0",
                                      "dataset.num_workers=-1", "model.mask_prob=1.5",
                                      "dataset.validate_interval=-1", "checkpoint.save_interval=-5"])
def test_out_of_range_values_are_refused_at_load(override):
    key = override.split("=")[0]
    with pytest.raises(HubertkitError, match=f"{key}=.* is out of range"):
        load_config("hubert_base_librispeech", ["task.data=x", "task.label_dir=y", "model.label_rate=100", override])


# fairseq's examples/hubert/config/pretrain/hubert_base_librispeech.yaml as published,
# with its package line, `labels: ???`, `loss_weights: [10,]` and hydra block
FAIRSEQ_BASE = """# @package _group_

common:
  fp16: true
  log_format: json
  log_interval: 200
  seed: 1337
  tensorboard_logdir: tblog

checkpoint:
  save_interval_updates: 25000
  keep_interval_updates: 1
  no_epoch_checkpoints: true


distributed_training:
  ddp_backend: no_c10d
  distributed_backend: 'nccl'
  distributed_world_size: 32
  distributed_port: 29671
  nprocs_per_node: 8
  find_unused_parameters: true

task:
  _name: hubert_pretraining
  data: ???
  label_dir: ???
  labels: ???
  label_rate: ${model.label_rate}
  sample_rate: 16000
  max_sample_size: 250000
  min_sample_size: 32000
  pad_audio: false
  random_crop: true
  normalize: false # must be consistent with extractor

dataset:
  num_workers: 6
  max_tokens: 1400000
  skip_invalid_size_inputs_valid_test: true
  validate_interval: 5
  validate_interval_updates: 10000

criterion:
  _name: hubert
  pred_masked_weight: 1.0
  pred_nomask_weight: 0.0
  loss_weights: [10,]

optimization:
  max_update: 400000
  lr: [0.0005]
  clip_norm: 10.0

optimizer:
  _name: adam
  adam_betas: (0.9,0.98)
  adam_eps: 1e-06
  weight_decay: 0.01

lr_scheduler:
  _name: polynomial_decay
  warmup_updates: 32000

model:
  _name: hubert
  label_rate: ???
  skip_masked: false
  skip_nomask: false
  mask_prob: 0.80
  extractor_mode: default
  conv_feature_layers: '[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2'
  final_dim: 256
  encoder_layerdrop: 0.05
  dropout_input: 0.1
  dropout_features: 0.1
  dropout: 0.1
  attention_dropout: 0.1
  feature_grad_mult: 0.1
  untie_final_proj: true
  activation_dropout: 0.0

hydra:
  job:
    config:
      override_dirname:
        kv_sep: '-'
        item_sep: '__'
        exclude_keys:
          - run
          - task.data
          - task.label_dir
  run:
    dir: ???
  sweep:
    dir: ???
    subdir: ${hydra.job.config_name}__${hydra.job.override_dirname}
"""


def test_fairseqs_own_yaml_text_loads_unchanged(tmp_path, caplog):
    (tmp_path / "hubert_base_librispeech.yaml").write_text(FAIRSEQ_BASE)
    with pytest.raises(HubertkitError, match="task.labels"):  # ??? in fairseq's text
        load_config("hubert_base_librispeech", REQUIRED, tmp_path)
    theirs = load_config("hubert_base_librispeech", REQUIRED + ["task.labels=[km]"], tmp_path)
    assert theirs == load_config("hubert_base_librispeech", REQUIRED)  # the shipped copy
    # the keys that change nothing are named once; validate_interval is implemented, so not among them
    assert "dataset.skip_invalid_size_inputs_valid_test=True" in caplog.text
    assert "model.dropout_features=0.1 (fairseq's HuBERT applies it to a copy" in caplog.text
    assert "validate_interval" not in caplog.text and theirs.dataset.validate_interval == 5


def test_keys_of_other_sections_are_not_named_as_having_no_effect(caplog):
    load_config("bart_demo", ["task.data=/u", "task.texts=/t"], str(config_dir_default() / "unit_asr"))
    assert "dropout_features" not in caplog.text  # a unit-ASR model has no such key


@pytest.mark.parametrize("key", ["optimization.lr=[0.001,0.0005]", "optimization.update_freq=[1,2]"])
def test_per_epoch_lists_are_refused_not_cut_to_their_first_value(key):
    with pytest.raises(HubertkitError, match="fairseq's per-epoch lists are not implemented"):
        load_config("demo", [*REQUIRED, key])


SHIPPED = sorted(p.relative_to(config_dir_default()) for p in config_dir_default().rglob("*.yaml") if "pipeline" not in p.name)
NEEDS = {"finetune": ["task.data=d", "task.label_dir=l", "model.w2v_path=m"], "unit_asr": ["task.data=u", "task.texts=t"]}


@pytest.mark.parametrize("path", SHIPPED, ids=str)
def test_every_shipped_config_loads(path):
    overrides = NEEDS.get(path.parent.name, REQUIRED + ["task.feat_dir=f"] * ("disentangle" in path.name))
    cfg = load_config(path.stem, overrides, config_dir_default() / path.parent)
    assert cfg.model._name in ("hubert", "hubert_ctc", "unit_bart", "unit_ctc")


FAIRSEQ_TEXTS = {"hubert_base_librispeech", "hubert_large_librivox", "hubert_xlarge_librivox", "base_10h"}


@pytest.mark.parametrize("path", [p for p in SHIPPED if p.stem not in FAIRSEQ_TEXTS], ids=str)
def test_our_configs_repeat_no_default(path):
    """A value lives in one place: our YAMLs set only what differs from their parents
    (``defaults:``) or, without one, from the dataclasses."""
    full = config_dir_default() / path
    own = read_yaml_mapping(full)
    parents = {}
    for name in own.pop("defaults", []):
        parents = _merge(parents, _read_yaml(full.parent / f"{name}.yaml"))
    merged = _merge(parents, own)
    repeated = []
    for group, values in own.items():
        section = section_class(group, merged[group].get("_name"))
        defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                    for f in dataclasses.fields(section)}
        inherited = parents.get(group, {}) if section is section_class(group, parents.get(group, {}).get("_name")) else {}
        for key, value in values.items():
            if key != "_name" and value == inherited.get(key, defaults[key]):
                repeated.append(f"{group}.{key}={value}")
    assert not repeated, f"{path} repeats: {repeated}"


def _sections_with(key: str) -> list[str]:
    group, name = key.split(".")
    return [config for config, model in (("hubert_base_librispeech", "hubert"), ("finetune/base_10h", "hubert_ctc"))
            if name in {f.name for f in dataclasses.fields(section_class(group, model if group == "model" else None))}]


@pytest.mark.parametrize("config, key", [(c, k) for k in sorted(UNSUPPORTED) for c in _sections_with(k)])
def test_unimplemented_fairseq_keys_are_refused_unless_at_the_implemented_value(config, key):
    implemented = UNSUPPORTED[key][0]
    overrides = NEEDS["finetune"] if config.startswith("finetune") else REQUIRED
    other = {str: "poisson", bool: not implemented, float: 3.0, int: 3}[type(implemented)]
    with pytest.raises(HubertkitError, match=f"{key}={other!r} is not supported"):
        load_config(config, overrides + [f"{key}={other}"])
    assert getattr(getattr(load_config(config, overrides + [f"{key}={implemented}"]), key.split(".")[0]),
                   key.split(".")[1]) == implemented


def test_a_key_of_another_section_names_its_section(tmp_path):
    with pytest.raises(HubertkitError, match="model.w2v_path belongs to model._name=hubert_ctc"):
        load_config("hubert_base_librispeech", REQUIRED + ["model.w2v_path=x"])
    with pytest.raises(HubertkitError, match="model._name='wav2vec2' is not supported; hubertkit has hubert, "):
        load_config("hubert_base_librispeech", REQUIRED + ["model._name=wav2vec2"])
    (tmp_path / "mine.yaml").write_text("task: {data: d}\nmodel: {label_rate: 50}\ncriterion: {_name: ctc}\n")
    with pytest.raises(HubertkitError, match="model._name=hubert needs criterion._name=hubert, got ctc"):
        load_config("mine", [], tmp_path)


def test_a_wrong_type_names_the_key():
    with pytest.raises(HubertkitError, match="optimization.max_update"):
        load_config("hubert_base_librispeech", REQUIRED + ["optimization.max_update=lots"])
    cfg = load_config("hubert_base_librispeech", REQUIRED + ["optimization.max_update=1e5", "optimization.lr=0.001"])
    assert cfg.optimization.max_update == 100000 and cfg.optimization.lr == [0.001]


FAIRSEQ_DEFAULTS = json.loads((Path(__file__).parent / "data" / "fairseq_defaults.json").read_text())
# hubertkit's dataclass -> fairseq's, whose code defaults it keeps (tools/fairseq_defaults.py
# parsed them from fairseq's source; the file records the commit)
FAIRSEQ_CLASSES = {
    "common": ("CommonConfig", train_config.CommonConfig),
    "dataset": ("DatasetConfig", train_config.DatasetConfig),
    "optimization": ("OptimizationConfig", train_config.OptimizationConfig),
    "checkpoint": ("CheckpointConfig", train_config.CheckpointConfig),
    "distributed_training": ("DistributedTrainingConfig", train_config.DistributedTrainingConfig),
    "optimizer": ("FairseqAdamConfig", train_config.AdamConfig),
    "lr_scheduler": ("PolynomialDecayLRScheduleConfig", train_config.PolynomialDecayConfig),
    "lr_scheduler ": ("TriStageLRScheduleConfig", train_config.TriStageConfig),
    "criterion": ("HubertCriterionConfig", train_config.HubertCriterionConfig),
    "criterion ": ("CtcCriterionConfig", train_config.CtcCriterionConfig),
    "criterion  ": ("LabelSmoothedCrossEntropyCriterionConfig", train_config.LabelSmoothedCrossEntropyConfig),
    "model": ("HubertConfig", train_config.HubertModelConfig),
    "model ": ("HubertCtcConfig", train_config.HubertCtcModelConfig),
    "task": ("HubertPretrainingConfig", train_config.PretrainingTaskConfig),
}


def _comparable(value):
    """fairseq writes Adam's betas as a tuple, hubertkit as fairseq's YAMLs do: a string."""
    if isinstance(value, str) and value.startswith("("):
        return [float(v) for v in value.strip("()").split(",")]
    return value


@pytest.mark.parametrize("group", sorted(FAIRSEQ_CLASSES))
def test_every_default_is_fairseqs_code_default(group):
    """A YAML that leaves a key out trains as under fairseq. The departures are the keys
    whose other values hubertkit refuses (UNSUPPORTED), keys with no effect here
    (NO_EFFECT), and fields that say why in their metadata (``departs``)."""
    theirs_name, ours = FAIRSEQ_CLASSES[group]
    theirs = FAIRSEQ_DEFAULTS["classes"][theirs_name]
    differ = []
    for f in dataclasses.fields(ours):
        key = f"{group.strip()}.{f.name}"
        if f.name == "_name" or f.name not in theirs or key in NO_EFFECT or "departs" in f.metadata:
            continue
        mine = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "???")
        if key in UNSUPPORTED and UNSUPPORTED[key][0] == mine:
            continue
        if _comparable(mine) != _comparable(theirs[f.name]):
            differ.append(f"{key}: hubertkit {mine!r}, fairseq {theirs[f.name]!r}")
    assert not differ, f"defaults that are not fairseq's ({theirs_name} at {FAIRSEQ_DEFAULTS['commit'][:10]}): {differ}"


def test_a_run_needs_an_end_and_a_schedule_a_length():
    with pytest.raises(HubertkitError, match="the run would never end"):
        load_config("demo", [*REQUIRED, "optimization.max_update=0"])
    with pytest.raises(HubertkitError, match="total_num_update must be > 0"):
        load_config("demo", [*REQUIRED, "optimization.max_update=0", "optimization.max_epoch=3"])
    cfg = load_config("demo", [*REQUIRED, "optimization.max_update=0", "optimization.max_epoch=3",
                               "lr_scheduler.total_num_update=100"])
    assert cfg.optimization.max_update == 0  # fairseq's meaning: no limit; max_epoch ends the run


def test_help_config_lists_every_key_with_its_default_help_and_rules(capsys):
    from hubertkit.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", "--help-config"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    flat = " ".join(out.split())  # help lines are wrapped
    assert "model.mask_prob = 0.65 share of frames that start a masked span" in flat and "(must be in [0, 1])" in flat
    assert "optimization.clip_norm = 0.0 clip the gradient to this norm (must be >= 0 (0: no clipping))" in flat
    assert "model.mask_selection = 'static' how span lengths are drawn (only this value: only fixed-length spans" in flat
    # the fine-tuning network's encoder keys say what the pretraining network's say, at their own defaults
    assert "model.mask_prob = 0.5 share of frames that start a masked span" in flat
    for group, classes in train_config.all_sections().items():
        for cls in classes:
            for f in dataclasses.fields(cls):
                if f.name != "_name":
                    assert f.metadata.get("help") and f"  {group}.{f.name} = " in out, (cls, f.name)
