"""Interchange with transformers and fairseq, checked against transformers' own model."""

import argparse
import types

import pytest
import torch
import transformers

from hubertkit.errors import HubertkitError
from hubertkit.model import HubertModel, preset
from hubertkit.model.convert import (
    export_hf,
    from_fairseq,
    import_hf,
    load_fairseq_checkpoint,
    save_fairseq_checkpoint,
    to_fairseq,
)

LAYOUTS = {
    # Base-like: group norm in the first conv layer, post-LN, no conv bias
    "post-ln": dict(feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False),
    # Large-like: layer norm in every conv layer, pre-LN, conv bias
    "pre-ln": dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
}


def hf_model(layout: str) -> transformers.HubertModel:
    torch.manual_seed(0)
    cfg = transformers.HubertConfig(
        hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128,
        conv_dim=[32, 32, 32], conv_kernel=[10, 3, 3], conv_stride=[5, 2, 2],
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, **LAYOUTS[layout],
    )
    model = transformers.HubertModel(cfg).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a swapped name cannot pass
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def hf_hidden_states(model, wav):
    """transformers' hidden states and, last, its encoder output."""
    with torch.no_grad():
        out = model(wav, output_hidden_states=True)
    return [*out.hidden_states, out.last_hidden_state]


def our_hidden_states(model, wav):
    return [*model.hidden_states(wav), model.extract_features(wav)[0]]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_import_from_transformers_gives_identical_hidden_states(layout, tmp_path):
    ref = hf_model(layout)
    ref.save_pretrained(tmp_path / "hf")
    ours = import_hf(tmp_path / "hf", num_classes=[20]).eval()
    wav = torch.randn(2, 8000)
    theirs = hf_hidden_states(ref, wav)
    mine = our_hidden_states(ours, wav)
    assert len(mine) == len(theirs) == 5
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_export_loads_in_transformers(layout, tmp_path):
    ref = hf_model(layout)
    ref.save_pretrained(tmp_path / "hf")
    ours = import_hf(tmp_path / "hf", num_classes=[20]).eval()
    with torch.no_grad():
        for p in ours.parameters():  # our own weights from here on
            p.add_(0.05 * torch.randn_like(p))
    export_hf(ours, tmp_path / "out")
    loaded = transformers.HubertModel.from_pretrained(tmp_path / "out").eval()
    wav = torch.randn(1, 6000)
    for a, b in zip(our_hidden_states(ours, wav), hf_hidden_states(loaded, wav)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # and back, pretraining head included
    again = import_hf(tmp_path / "out")
    assert again.cfg.num_classes == [20]
    for (n, p), q in zip(ours.state_dict().items(), again.state_dict().values()):
        assert torch.equal(p, q), n


def fairseq_state_from_hf(hf: transformers.HubertModel, n_conv: int, layer_norm_conv: bool) -> dict:
    """fairseq's parameter names, written out from fairseq's module structure:
    conv_layers.{i} = Sequential(Conv1d, Dropout, norm, GELU), with the layer-norm
    variant wrapped as Sequential(TransposeLast, LayerNorm, TransposeLast);
    pos_conv = Sequential(weight-normed Conv1d, SamePad, GELU)."""
    s = hf.state_dict()
    out = {}
    for i in range(n_conv):
        out[f"feature_extractor.conv_layers.{i}.0.weight"] = s[f"feature_extractor.conv_layers.{i}.conv.weight"]
        if f"feature_extractor.conv_layers.{i}.conv.bias" in s:
            out[f"feature_extractor.conv_layers.{i}.0.bias"] = s[f"feature_extractor.conv_layers.{i}.conv.bias"]
        for p in ("weight", "bias"):
            key = f"feature_extractor.conv_layers.{i}.layer_norm.{p}"
            if key in s:
                out[f"feature_extractor.conv_layers.{i}.{'2.1' if layer_norm_conv else '2'}.{p}"] = s[key]
    rename = {
        "feature_projection.layer_norm": "layer_norm", "feature_projection.projection": "post_extract_proj",
        "encoder.layer_norm": "encoder.layer_norm", "encoder.pos_conv_embed.conv.bias": "encoder.pos_conv.0.bias",
        "encoder.pos_conv_embed.conv.parametrizations.weight.original0": "encoder.pos_conv.0.weight_g",
        "encoder.pos_conv_embed.conv.parametrizations.weight.original1": "encoder.pos_conv.0.weight_v",
        "masked_spec_embed": "mask_emb", ".attention.": ".self_attn.", ".layer_norm.": ".self_attn_layer_norm.",
        ".feed_forward.intermediate_dense.": ".fc1.", ".feed_forward.output_dense.": ".fc2.",
    }
    for k, v in s.items():
        if k.startswith("feature_extractor."):
            continue
        new = k
        for a, b in rename.items():
            if k.startswith("encoder.layers.") and a.startswith("."):
                new = new.replace(a, b)
            elif new.startswith(a) and not a.startswith("."):
                new = b + new[len(a):]
        out[new] = v
    return out


@pytest.mark.parametrize("layout", LAYOUTS)
def test_fairseq_checkpoint_import_matches_transformers(layout, tmp_path):
    ref = hf_model(layout)
    state = fairseq_state_from_hf(ref, 3, layout == "pre-ln")
    torch.manual_seed(1)
    state["final_proj.weight"] = torch.randn(16, 64)
    state["final_proj.bias"] = torch.zeros(16)
    state["label_embs_concat"] = torch.randn(24, 16)  # 20 k-means classes + 4 specials
    c = ref.config
    ckpt = {
        "cfg": {
            "model": {
                "_name": "hubert", "extractor_mode": "layer_norm" if layout == "pre-ln" else "default",
                "conv_feature_layers": "[(32,10,5)] + [(32,3,2)] * 2", "conv_bias": c.conv_bias,
                "encoder_layers": 3, "encoder_embed_dim": 64, "encoder_ffn_embed_dim": 128,
                "encoder_attention_heads": 4, "layer_norm_first": c.do_stable_layer_norm, "conv_pos": 16,
                "conv_pos_groups": 4, "final_dim": 16, "untie_final_proj": False, "some_unused_key": 1,
                "label_rate": "${task.label_rate}",  # as older fairseq versions saved it, unresolved
            },
            "task": {"_name": "hubert_pretraining", "label_rate": 50.0},
        },
        "model": state,
    }
    torch.save(ckpt, tmp_path / "fairseq.pt")
    ours = load_fairseq_checkpoint(tmp_path / "fairseq.pt").eval()
    assert ours.cfg.num_classes == [24] and ours.cfg.label_rate == 50.0
    wav = torch.randn(1, 7000)
    for a, b in zip(our_hidden_states(ours, wav), hf_hidden_states(ref, wav)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # export back to fairseq's layout: the same tensors under the same names
    again = to_fairseq(ours)["model"]
    assert set(again) == set(state)
    for k in state:
        assert torch.equal(again[k], state[k]), k


def test_fairseq_round_trip_of_own_model(tmp_path):
    torch.manual_seed(0)
    model = HubertModel(preset("tiny", num_classes=[104, 54], label_rate=100)).eval()
    save_fairseq_checkpoint(model, tmp_path / "ckpt.pt")
    back = load_fairseq_checkpoint(tmp_path / "ckpt.pt").eval()
    assert back.cfg == model.cfg
    wav = torch.randn(1, 16000)
    torch.testing.assert_close(back.extract_features(wav)[0], model.extract_features(wav)[0], atol=0, rtol=0)


@pytest.mark.parametrize("style", ["argparse", "omegaconf"])
def test_pickled_fairseq_config_needs_trust(style, tmp_path):
    from omegaconf import OmegaConf

    torch.manual_seed(0)
    model = HubertModel(preset("tiny", num_classes=[104])).eval()
    ckpt = to_fairseq(model)
    del ckpt["hubertkit"]
    # fairseq's older checkpoints keep an argparse Namespace; newer ones omegaconf objects
    if style == "argparse":
        ckpt["args"] = argparse.Namespace(**ckpt.pop("cfg")["model"])
    else:
        ckpt["cfg"] = OmegaConf.create(ckpt["cfg"])
    torch.save(ckpt, tmp_path / "old.pt")
    with pytest.raises(HubertkitError, match="--trust-pickle"):
        load_fairseq_checkpoint(tmp_path / "old.pt")
    back = load_fairseq_checkpoint(tmp_path / "old.pt", trust_pickle=True).eval()
    assert back.cfg.num_classes == [104]
    wav = torch.randn(1, 16000)
    torch.testing.assert_close(back.extract_features(wav)[0], model.extract_features(wav)[0])


def test_not_a_hubert_checkpoint(tmp_path):
    with pytest.raises(HubertkitError, match="no 'model'"):
        from_fairseq({"cfg": {}})


def test_a_model_with_nan_weights_is_refused_by_every_reader(tmp_path):
    """NaN weights give NaN features with exit code 0 (k-means then labels every frame
    alike): export, dump-hubert and the rest stop at load, for each checkpoint format."""
    from hubertkit.model.io import export, load_model, save_model

    model = HubertModel(preset("tiny", num_classes=[54], label_rate=100))
    with torch.no_grad():
        model.encoder.layers[1].fc1.weight[0, 0] = float("nan")
    save_model(model, tmp_path / "nan.pt")
    export_hf(model, tmp_path / "hf")
    for path in (tmp_path / "nan.pt", tmp_path / "hf"):
        with pytest.raises(HubertkitError, match=r"NaN or infinite weights in 1 tensor\(s\), e.g. encoder.layers.1.fc1.weight"):
            load_model(path)
    with pytest.raises(HubertkitError, match="NaN or infinite weights"):
        export(tmp_path / "nan.pt", tmp_path / "out", "fairseq")
    assert not (tmp_path / "out").exists()


def test_export_command_all_directions(tmp_path):
    from hubertkit.cli import main
    from hubertkit.model.io import load_model, save_model

    torch.manual_seed(0)
    model = HubertModel(preset("tiny", num_classes=[54], label_rate=100)).eval()
    save_model(model, tmp_path / "ours.pt")
    main(["export", str(tmp_path / "ours.pt"), str(tmp_path / "hf"), "--format", "hf"])
    main(["export", str(tmp_path / "hf"), str(tmp_path / "fs.pt"), "--format", "fairseq"])
    wav = torch.randn(1, 16000)
    ref = model.extract_features(wav, layer=2)[0]
    for path in ("ours.pt", "hf", "fs.pt"):
        back = load_model(tmp_path / path)
        assert back.cfg == model.cfg, path
        torch.testing.assert_close(back.extract_features(wav, layer=2)[0], ref, atol=0, rtol=0)
    loaded = transformers.HubertModel.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(wav).last_hidden_state, model.extract_features(wav)[0], atol=1e-5, rtol=1e-5)


class FairseqDictionaryStandIn:
    """What fairseq's unpickler builds: fairseq.data.dictionary.Dictionary, by its fields."""


def load_as_fairseq_does(path):
    """fairseq's checkpoint_utils.load_checkpoint_to_cpu + _upgrade_state_dict +
    load_model_ensemble_and_task, as far as they read the file (fairseq itself not installed):
    torch.load (full unpickling, fairseq's classes importable), OmegaConf.create of cfg, the
    optimizer_history / extra_state upgrades, task setup (cfg.task.data must not be MISSING,
    task_state's dictionaries are merged in) and HubertModel's class counts."""
    import pickle

    from omegaconf import OmegaConf

    class FairseqUnpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) == ("fairseq.data.dictionary", "Dictionary"):
                return FairseqDictionaryStandIn
            return super().find_class(module, name)

    pickle_module = types.SimpleNamespace(__name__="pickle", Unpickler=FairseqUnpickler, load=pickle.load)
    state = torch.load(path, map_location="cpu", weights_only=False, pickle_module=pickle_module)
    cfg = OmegaConf.create(state["cfg"], flags={"allow_objects": True})
    last = state["optimizer_history"][-1]  # _upgrade_state_dict: KeyError 'best_loss' without it
    assert {"criterion_name", "optimizer_name", "lr_scheduler_state", "num_updates"} <= set(last)
    assert "train_iterator" in state["extra_state"]
    assert cfg.task._name == "hubert_pretraining" and cfg.model._name == "hubert"
    assert not OmegaConf.is_missing(cfg.task, "data") and cfg.task.sample_rate == 16000
    dictionaries = state["task_state"]["dictionaries"]
    for d in dictionaries:
        assert isinstance(d, FairseqDictionaryStandIn)
        assert d.symbols[:4] == ["<s>", "<pad>", "</s>", "<unk>"] and (d.bos_index, d.pad_index, d.eos_index, d.unk_index) == (0, 1, 2, 3)
        assert d.nspecial == 4 and len(d.count) == len(d.symbols) and d.indices == {s: i for i, s in enumerate(d.symbols)}
    num_classes = [len(d.symbols) for d in dictionaries]  # HubertModel: [len(d) for d in dictionaries]
    assert state["model"]["label_embs_concat"].shape[0] == sum(num_classes)
    return state, cfg, num_classes


def test_fairseq_export_opens_in_fairseqs_loader(labelled, tmp_path):
    from hubertkit.cli import main
    from hubertkit.train.trainer import train

    train("demo", [f"task.data={labelled / 'tsv'}", f"task.label_dir={labelled / 'labels'}", f"checkpoint.save_dir={tmp_path / 'ck'}",
                   "dataset.num_workers=0", "optimization.max_update=2", "model.encoder_layers=2", "dataset.max_tokens=150000"],
          progress=False)
    main(["export", str(tmp_path / "ck" / "checkpoint_last.pt"), str(tmp_path / "fs.pt"), "--format", "fairseq"])
    state, cfg, num_classes = load_as_fairseq_does(tmp_path / "fs.pt")
    symbols = (labelled / "labels" / "dict.km.txt").read_text().split()[::2]
    assert state["task_state"]["dictionaries"][0].symbols[4:] == symbols and num_classes == [len(symbols) + 4]
    assert cfg.task.data == str(labelled / "tsv") and list(cfg.task.labels) == ["km"]
    assert state["optimizer_history"][-1]["num_updates"] == 2
    # and hubertkit reads its own export back without --trust-pickle
    from hubertkit.model.io import load_model

    back, ours = load_model(tmp_path / "fs.pt"), load_model(tmp_path / "ck" / "checkpoint_last.pt")
    wav = torch.randn(1, 8000)
    torch.testing.assert_close(back.extract_features(wav)[0], ours.extract_features(wav)[0], atol=0, rtol=0)


def test_label_sets_of_different_sizes_come_from_the_dictionaries(tmp_path):
    torch.manual_seed(0)
    model = HubertModel(preset("tiny", num_classes=[104, 54], label_rate=100, untie_final_proj=True)).eval()
    save_fairseq_checkpoint(model, tmp_path / "fs.pt")
    ckpt, _, num_classes = load_as_fairseq_does(tmp_path / "fs.pt")
    assert num_classes == [104, 54]
    del ckpt["hubertkit"]  # as a file fairseq itself wrote: only task_state says how the rows split
    assert from_fairseq(ckpt).cfg.num_classes == [104, 54]


def tiny_like(layout: str):
    """The tiny model in Base's layout (group norm, post-LN) or Large's (layer norm in
    every conv layer, conv bias, pre-LN), every parameter perturbed so that two swapped
    names (two layer norms of ones) cannot pass."""
    torch.manual_seed(0)
    large = {"extractor_mode": "layer_norm", "layer_norm_first": True, "conv_bias": True} if layout == "large" else {}
    model = HubertModel(preset("tiny", num_classes=[24], label_rate=50, **large))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def torchaudio_layout(fairseq_state: dict, pretrain: bool) -> dict:
    """fairseq names → torchaudio's, restated from torchaudio's import_fairseq.py (its
    documented mapping); ``pretrain``: HuBERTPretrainModel's layout, else the released
    bundles' Wav2Vec2Model (no mask embedding, no label head)."""
    import re

    rules = [(r"feature_extractor\.conv_layers\.(\d+)\.0\.", r"feature_extractor.conv_layers.\1.conv."),
             (r"feature_extractor\.conv_layers\.(\d+)\.2\.(1\.)?", r"feature_extractor.conv_layers.\1.layer_norm."),
             (r"^post_extract_proj\.", "encoder.feature_projection.projection."),
             (r"^layer_norm\.", "encoder.feature_projection.layer_norm."),
             (r"^encoder\.pos_conv\.0\.", "encoder.transformer.pos_conv_embed.conv."),
             (r"^encoder\.layer_norm\.", "encoder.transformer.layer_norm."),
             (r"^encoder\.layers\.(\d+)\.self_attn\.", r"encoder.transformer.layers.\1.attention."),
             (r"^encoder\.layers\.(\d+)\.self_attn_layer_norm\.", r"encoder.transformer.layers.\1.layer_norm."),
             (r"^encoder\.layers\.(\d+)\.fc1\.", r"encoder.transformer.layers.\1.feed_forward.intermediate_dense."),
             (r"^encoder\.layers\.(\d+)\.fc2\.", r"encoder.transformer.layers.\1.feed_forward.output_dense."),
             (r"^encoder\.layers\.(\d+)\.final_layer_norm\.", r"encoder.transformer.layers.\1.final_layer_norm.")]
    heads = {"mask_emb": "mask_generator.mask_embedding", "label_embs_concat": "logit_generator.label_embeddings",
             "final_proj.weight": "logit_generator.final_proj.weight", "final_proj.bias": "logit_generator.final_proj.bias"}
    out = {}
    for key, value in fairseq_state.items():
        if key in heads:
            if pretrain:
                out[heads[key]] = value
            continue
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[("wav2vec2." if pretrain else "") + key] = value
    return out


@pytest.mark.parametrize("layout", ["base", "large"])
@pytest.mark.parametrize("pretrain", [True, False])
def test_torchaudio_state_dicts_give_the_same_weights(layout, pretrain, tmp_path):
    """Checked against torchaudio's documented key layout (torchaudio pins another torch and
    cannot be installed beside this one): our model → fairseq's names (checked against
    fairseq) → torchaudio's → read back, weight for weight."""
    from hubertkit.model.io import load_model, starting_weights

    model = tiny_like(layout)
    state = torchaudio_layout(to_fairseq(model)["model"], pretrain)
    torch.save(state, tmp_path / "ta.pth")
    weights = starting_weights(tmp_path / "ta.pth")
    expected = {k: v for k, v in model.state_dict().items()
                if pretrain or not k.startswith(("mask_emb", "label_embs_concat", "final_proj"))}
    assert weights.keys() == expected.keys()
    for k, v in expected.items():
        assert torch.equal(weights[k], v), k
    with pytest.raises(HubertkitError, match="torchaudio state dict.*finetune_from_model"):
        load_model(tmp_path / "ta.pth")


def test_s3prl_converted_checkpoints_load(tmp_path):
    """s3prl's converted HuBERT checkpoints (upstream/hubert/convert.py: model_cfg, task_cfg,
    fairseq-named model_weight, dictionaries_symbols with fairseq's specials)."""
    from hubertkit.model.io import load_model

    model = HubertModel(preset("tiny", num_classes=[104, 54], label_rate=100)).eval()
    fs = to_fairseq(model)
    torch.save({"task_cfg": fs["cfg"]["task"], "model_cfg": fs["cfg"]["model"], "model_weight": fs["model"],
                "dictionaries_symbols": [["<s>", "<pad>", "</s>", "<unk>", *map(str, range(n - 4))] for n in (104, 54)]},
               tmp_path / "s3prl.pt")
    loaded = load_model(tmp_path / "s3prl.pt")
    assert loaded.cfg.num_classes == [104, 54]
    wav = torch.randn(1, 16000)
    assert torch.equal(loaded.extract_features(wav)[0], model.extract_features(wav)[0])


@pytest.mark.parametrize("config, message", [
    (b"{not json", "config.json is not valid UTF-8 JSON"),
    ('{"model_type": "hubert", "name": "\xe9"}'.encode("latin-1"), "config.json is not valid UTF-8 JSON"),
    (b"[1, 2]", "config.json holds a JSON list, not an object"),
    (b'{"model_type": "hubert"}', "config.json lacks conv_dim, conv_kernel"),
])
def test_a_broken_transformers_config_is_refused(tmp_path, config, message):
    from hubertkit.model.io import load_model

    export_hf(HubertModel(preset("tiny")), tmp_path / "hf")
    (tmp_path / "hf" / "config.json").write_bytes(config)
    with pytest.raises(HubertkitError, match=message):
        load_model(tmp_path / "hf")


def test_weights_of_more_layers_than_the_config_describes_are_refused(tmp_path):
    """They were ignored without a word: the model had fewer layers than the file."""
    import json

    from hubertkit.model.checkpoint import read_state
    from hubertkit.model.io import load_model

    model = HubertModel(preset("tiny", num_classes=[104]))  # 3 layers
    export_hf(model, tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    for layers, message in ((2, "holds weights of 3 encoder layers but its config describes 2"),
                            (100000, "encoder_layers must be in 1..1024")):
        (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, "num_hidden_layers": layers}))
        with pytest.raises(HubertkitError, match=message):
            load_model(tmp_path / "hf")
    save_fairseq_checkpoint(model, tmp_path / "fs.pt")
    ckpt = read_state(tmp_path / "fs.pt")
    ckpt["cfg"]["model"]["encoder_layers"] = 2
    del ckpt["task_state"]  # its dictionaries are fairseq objects, which torch.save would pickle
    torch.save(ckpt, tmp_path / "fs.pt")
    with pytest.raises(HubertkitError, match="fairseq checkpoint holds weights of 3 encoder layers but its config describes 2"):
        load_fairseq_checkpoint(tmp_path / "fs.pt")
