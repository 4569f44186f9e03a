import pytest

from hubertkit.config import load_config, parse_override
from hubertkit.errors import HubertkitError

REQUIRED = ["task.data=/d", "task.label_dir=/l", "model.label_rate=100"]


@pytest.mark.parametrize("name", ["hubert_base_librispeech", "hubert_large_librivox", "hubert_xlarge_librivox"])
def test_shipped_fairseq_configs_load(name):
    cfg = load_config(name, REQUIRED)
    assert cfg.task.label_rate == 100  # ${model.label_rate}
    assert cfg.lr_scheduler.total_num_update == cfg.optimization.max_update == 400000
    assert cfg.adam_betas == (0.9, 0.98) and cfg.optimizer.adam_eps == 1e-6
    m = cfg.model_config([104])
    assert m.mask_prob == 0.8 and m.untie_final_proj


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
    with pytest.raises(HubertkitError, match="unknown config key 'optimisation'"):
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
    (tmp_path / "mine.yaml").write_text("model:\n  label_rate: 50\n  encoder_layers: 2\ntask:\n  data: /d\n")
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
                                      "dataset.num_workers=-1", "model.mask_prob=1.5"])
def test_out_of_range_values_are_refused_at_load(override):
    key = override.split("=")[0]
    with pytest.raises(HubertkitError, match=f"{key}=.* is out of range"):
        load_config("hubert_base_librispeech", ["task.data=x", "task.label_dir=y", "model.label_rate=100", override])
