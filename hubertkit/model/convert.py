"""Checkpoint interchange: hubertkit ⇄ fairseq HuBERT checkpoints ⇄ ``transformers`` folders.

The three share one network; only parameter names (and fairseq's weight-norm layout
for the positional convolution) differ. Each mapping is a list of
``(hubertkit name, other name)`` pairs built from the config.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import torch

from hubertkit.config.model import HubertConfig, parse_conv_layers
from hubertkit.data.audio import SAMPLE_RATE
from hubertkit.data.dictionary import (
    FAIRSEQ_PICKLE,
    NUM_SPECIAL,
    FairseqDictionary,
)
from hubertkit.errors import HubertkitError
from hubertkit.fileio import save_torch, write_text
from hubertkit.model.checkpoint import load_weights, read_state
from hubertkit.model.hubert import HubertModel

# ---------------------------------------------------------------------------------------
# fairseq


# a Transformer layer's modules: (ours = fairseq's, transformers')
_LAYER_MODULES = [("self_attn.q_proj", "attention.q_proj"), ("self_attn.k_proj", "attention.k_proj"),
                  ("self_attn.v_proj", "attention.v_proj"), ("self_attn.out_proj", "attention.out_proj"),
                  ("self_attn_layer_norm", "layer_norm"), ("fc1", "feed_forward.intermediate_dense"),
                  ("fc2", "feed_forward.output_dense"), ("final_layer_norm", "final_layer_norm")]


def weight_names(cfg: HubertConfig) -> list[tuple[str, str | None, str | None]]:
    """Every weight of the network as (ours, fairseq's, transformers') name; None where
    that layout has no such weight (transformers has no pretraining head)."""
    rows = []
    for i in range(len(cfg.conv_layers)):
        ours, hf = f"feature_extractor.conv_layers.{i}", f"feature_extractor.conv_layers.{i}"
        rows.append((f"{ours}.conv.weight", f"{ours}.0.weight", f"{hf}.conv.weight"))
        if cfg.conv_bias:
            rows.append((f"{ours}.conv.bias", f"{ours}.0.bias", f"{hf}.conv.bias"))
        if cfg.extractor_mode == "layer_norm" or i == 0:  # a LayerNorm per layer, or the first layer's GroupNorm
            norm = f"{ours}.2.1" if cfg.extractor_mode == "layer_norm" else f"{ours}.2"
            rows += [(f"{ours}.norm.{w}", f"{norm}.{w}", f"{hf}.layer_norm.{w}") for w in ("weight", "bias")]
    rows += [(f"layer_norm.{w}", f"layer_norm.{w}", f"feature_projection.layer_norm.{w}") for w in ("weight", "bias")]
    if cfg.conv_layers[-1][0] != cfg.encoder_embed_dim:  # transformers always has it (hf_config refuses otherwise)
        rows += [(f"post_extract_proj.{w}", f"post_extract_proj.{w}", f"feature_projection.projection.{w}")
                 for w in ("weight", "bias")]
    rows += [("mask_emb", "mask_emb", "masked_spec_embed"),
             ("encoder.pos_conv.weight_g", "encoder.pos_conv.0.weight_g", "encoder.pos_conv_embed.conv.parametrizations.weight.original0"),
             ("encoder.pos_conv.weight_v", "encoder.pos_conv.0.weight_v", "encoder.pos_conv_embed.conv.parametrizations.weight.original1"),
             ("encoder.pos_conv.bias", "encoder.pos_conv.0.bias", "encoder.pos_conv_embed.conv.bias"),
             *[(f"encoder.layer_norm.{w}", f"encoder.layer_norm.{w}", f"encoder.layer_norm.{w}") for w in ("weight", "bias")]]
    for i in range(cfg.encoder_layers):
        for ours, hf in _LAYER_MODULES:
            rows += [(f"encoder.layers.{i}.{ours}.{w}", f"encoder.layers.{i}.{ours}.{w}", f"encoder.layers.{i}.{hf}.{w}")
                     for w in ("weight", "bias")]
    rows += [("final_proj.weight", "final_proj.weight", None), ("final_proj.bias", "final_proj.bias", None),
             ("label_embs_concat", "label_embs_concat", None)]
    return rows


def fairseq_names(cfg: HubertConfig) -> list[tuple[str, str]]:
    return [(ours, theirs) for ours, theirs, _ in weight_names(cfg)]


def hf_names(cfg: HubertConfig, prefix: str = "") -> list[tuple[str, str]]:
    return [(ours, prefix + theirs) for ours, _, theirs in weight_names(cfg) if theirs is not None]


def to_fairseq(model: HubertModel, task: dict | None = None, dictionaries: list[list[str]] | None = None,
               num_updates: int = 0) -> dict:
    """A checkpoint dict in fairseq's layout, complete enough for fairseq's
    ``checkpoint_utils.load_model_ensemble_and_task`` (and so ``dump_hubert_feature.py``):
    ``cfg`` with a ``task.data``, the training bookkeeping its upgrade step reads, and
    ``task_state`` holding the label dictionaries, so no ``dict.km.txt`` need be on disk.
    ``dictionaries``: each label set's symbols (default ``0..K-1``, as fairseq's recipe writes)."""
    state = model.state_dict()
    cfg = model.cfg.without_heads().to_dict()  # the disentangling heads have no fairseq counterpart
    num_classes = cfg.pop("num_classes")
    normalize = cfg.pop("normalize")  # fairseq's task key
    if dictionaries is None:
        dictionaries = [[str(i) for i in range(n - NUM_SPECIAL)] for n in num_classes]
    sizes = [len(d) + NUM_SPECIAL for d in dictionaries]
    if sizes != list(num_classes):
        raise HubertkitError(f"dictionaries of {sizes} classes do not fit the model's {list(num_classes)}")
    model_cfg = {"_name": "hubert", **cfg}
    task = {"_name": "hubert_pretraining", "data": ".", "labels": ["km"] * len(dictionaries), "label_rate": model.cfg.label_rate,
            "sample_rate": SAMPLE_RATE, "normalize": normalize, "fine_tuning": False, **(task or {})}
    return {
        "args": None,
        "cfg": {"_name": None, "model": model_cfg, "task": task},
        "model": {theirs: state[ours] for ours, theirs in fairseq_names(model.cfg)},
        "task_state": {"dictionaries": [FairseqDictionary(d) for d in dictionaries]},
        "optimizer_history": [{"criterion_name": "HubertCriterion", "optimizer_name": "FairseqAdam",
                               "lr_scheduler_state": {"best": None}, "num_updates": num_updates}],
        "extra_state": {"epoch": 1, "train_iterator": {"epoch": 1, "iterations_in_epoch": 0, "shuffle": True}, "val_loss": None},
        "last_optimizer_state": None,
        "hubertkit": {"num_classes": list(num_classes)},
    }


def _dictionary_sizes(task_state) -> list[int] | None:
    """Class counts of the label sets a fairseq checkpoint's ``task_state`` holds (its
    ``Dictionary`` objects, read as :class:`FairseqDictionary` or, trusted, as dicts)."""
    dictionaries = (task_state or {}).get("dictionaries") if isinstance(task_state, dict) else None
    if not dictionaries:
        return None
    return [len(d["symbols"] if isinstance(d, dict) else d.symbols) for d in dictionaries]


def _resolved(value, cfg: dict, depth: int = 0):
    """An OmegaConf interpolation an older fairseq left unresolved in a checkpoint's config
    (``model.label_rate: ${task.label_rate}``), looked up in that config; None if absent."""
    if not (isinstance(value, str) and value.startswith("${") and value.endswith("}")):
        return value
    node = cfg
    for part in value[2:-1].split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return _resolved(node, cfg, depth + 1) if depth < 8 else None


def from_fairseq(ckpt: dict) -> HubertModel:
    """Build a model from a fairseq HuBERT checkpoint dict (``cfg`` or legacy ``args``)."""
    if not isinstance(ckpt.get("model"), dict):
        raise HubertkitError("not a fairseq checkpoint: no 'model' state dict")
    state = ckpt["model"]
    cfg_src = ckpt.get("cfg") or {}
    if not isinstance(cfg_src, dict) or not all(isinstance(cfg_src.get(k) or {}, dict) for k in ("model", "task")):
        raise HubertkitError("its 'cfg' is not fairseq's config (a dict with model and task sections)")
    model_cfg = dict(cfg_src.get("model") or {}) or dict(ckpt.get("args") or {})
    task_cfg = dict(cfg_src.get("task") or {})
    if model_cfg.get("_name", "hubert") != "hubert":
        raise HubertkitError(f"checkpoint holds a {model_cfg.get('_name')!r} model, not HuBERT")
    if not torch.is_tensor(state.get("label_embs_concat")):
        raise HubertkitError("checkpoint has no label_embs_concat: is it a fine-tuned (CTC) model? Those are not supported here")
    num_classes = (ckpt.get("hubertkit") or {}).get("num_classes") or _dictionary_sizes(ckpt.get("task_state"))
    if num_classes is None:  # no dictionaries: the label sets are assumed equal in size
        rows = state["label_embs_concat"].shape[0]
        dim = state["label_embs_concat"].shape[1]
        n_sets = state["final_proj.weight"].shape[0] // dim if model_cfg.get("untie_final_proj") else 1
        if rows % n_sets:
            raise HubertkitError(f"cannot split {rows} label embeddings into {n_sets} label sets")
        num_classes = [rows // n_sets] * n_sets
    model_cfg = {k: v for k, v in ((k, _resolved(v, cfg_src)) for k, v in model_cfg.items()) if v is not None}
    task_rate = _resolved(task_cfg.get("label_rate"), cfg_src)
    if "label_rate" not in model_cfg and task_rate is not None:
        model_cfg["label_rate"] = task_rate
    cfg = HubertConfig.from_dict({**model_cfg, "num_classes": num_classes,
                                  "normalize": bool(task_cfg.get("normalize", False))})
    model = HubertModel(cfg)
    names = fairseq_names(cfg)
    missing = [theirs for _, theirs in names if theirs not in state]
    if missing:
        raise HubertkitError(f"fairseq checkpoint lacks {len(missing)} parameter(s), e.g. {missing[:3]}")
    check_no_extra_layers(state, cfg, "", "the fairseq checkpoint")
    return load_weights(model, {ours: state[theirs] for ours, theirs in names}, "the fairseq checkpoint")


class _Stub:
    """Stands in for classes a fairseq checkpoint pickles (omegaconf, argparse, fairseq
    enums) so its config can be read without those libraries."""

    args: tuple = ()  # unpickling may bypass __init__
    state: dict = {}

    def __init__(self, *args, **kwargs):
        self.args, self.state = args, kwargs

    def __setstate__(self, state):
        self.state = state

    def __call__(self, *args, **kwargs):  # enum-style reconstruction: Class(value)
        return _Stub(*args, **kwargs)


def _plain(obj):
    """Stub-laden config → plain dicts, lists and values."""
    if isinstance(obj, _Stub):
        state = obj.state if isinstance(obj.state, dict) else {}
        if "_content" in state:  # omegaconf containers
            return _plain(state["_content"])
        if "_val" in state:  # omegaconf value nodes
            return _plain(state["_val"])
        if "_value_" in state:  # enums
            return _plain(state["_value_"])
        if obj.args:
            return _plain(obj.args[0])
        return {k: _plain(v) for k, v in state.items() if not k.startswith("_")}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


class _TrustedUnpickler(pickle.Unpickler):
    SAFE = ("torch", "collections", "numpy", "builtins", "_codecs", "copyreg")

    def find_class(self, module, name):
        if module.split(".")[0] in self.SAFE:
            return super().find_class(module, name)
        return _Stub


class _trusted_pickle:
    Unpickler = _TrustedUnpickler
    load = pickle.load


def load_fairseq_checkpoint(path: str | os.PathLike, trust_pickle: bool = False) -> HubertModel:
    """Read a fairseq (or s3prl) HuBERT ``.pt``: see :func:`fairseq_model`."""
    return fairseq_model(path, read_state(path), trust_pickle)


def fairseq_model(path: str | os.PathLike, state, trust_pickle: bool = False) -> HubertModel:
    """A model from a fairseq or s3prl checkpoint, ``state`` being its contents as
    ``read_state`` read them safely: None when fairseq pickled its config objects, which
    need ``trust_pickle`` (they are then read with stubs, so neither fairseq nor omegaconf
    has to be installed)."""
    if state is None:
        if not trust_pickle:
            raise HubertkitError(f"{path} pickles Python objects besides tensors (fairseq stores its config that way); "
                                 "loading it can run code. Pass --trust-pickle if you trust this file.")
        state = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_trusted_pickle)
        if isinstance(state, dict):
            state = {k: (v if k in ("model", "model_weight") else _plain(v)) for k, v in state.items()}
    if not isinstance(state, dict):
        raise HubertkitError(f"{path} is not a HuBERT checkpoint")
    try:
        return from_fairseq(s3prl_to_fairseq(state) if is_s3prl(state) else state)
    except HubertkitError as e:
        raise HubertkitError(f"{path}: {e}") from None


def save_fairseq_checkpoint(model: HubertModel, path: str | os.PathLike, **fields) -> None:
    """``fields``: :func:`to_fairseq`'s ``task``, ``dictionaries`` and ``num_updates``."""
    save_torch(to_fairseq(model, **fields), path, "checkpoint", pickle_module=FAIRSEQ_PICKLE)


def fairseq_to_ours(state: dict) -> dict:
    """A fairseq HuBERT state dict under hubertkit's names, whatever its architecture
    (the inverse of :func:`fairseq_names` without a config)."""
    out = {}
    for key, value in state.items():
        key = re.sub(r"^feature_extractor\.conv_layers\.(\d+)\.0\.", r"feature_extractor.conv_layers.\1.conv.", key)
        key = re.sub(r"^feature_extractor\.conv_layers\.(\d+)\.2\.(1\.)?", r"feature_extractor.conv_layers.\1.norm.", key)
        out[key.replace("encoder.pos_conv.0.", "encoder.pos_conv.")] = value
    return out


def is_s3prl(ckpt: dict) -> bool:
    return {"model_cfg", "task_cfg", "model_weight", "dictionaries_symbols"} <= set(ckpt)


def s3prl_to_fairseq(ckpt: dict) -> dict:
    """s3prl's converted HuBERT checkpoint (``model_cfg``, ``task_cfg``, ``model_weight`` in
    fairseq's names, ``dictionaries_symbols`` with fairseq's specials) in fairseq's layout."""
    return {"cfg": {"model": ckpt["model_cfg"], "task": ckpt["task_cfg"]}, "model": ckpt["model_weight"],
            "hubertkit": {"num_classes": [len(s) for s in ckpt["dictionaries_symbols"]]}}


# torchaudio's Wav2Vec2Model / HuBERTPretrainModel names → fairseq's (torchaudio's
# import_fairseq.py documents the layout)
_TORCHAUDIO = [
    (r"^wav2vec2\.", ""),
    (r"^mask_generator\.mask_embedding$", "mask_emb"),
    (r"^logit_generator\.label_embeddings$", "label_embs_concat"),
    (r"^logit_generator\.final_proj\.", "final_proj."),
    (r"^feature_extractor\.conv_layers\.(\d+)\.conv\.", r"feature_extractor.conv_layers.\1.0."),
    (r"^encoder\.feature_projection\.projection\.", "post_extract_proj."),
    (r"^encoder\.feature_projection\.layer_norm\.", "layer_norm."),
    (r"^encoder\.transformer\.pos_conv_embed\.conv\.parametrizations\.weight\.original0$", "encoder.pos_conv.0.weight_g"),
    (r"^encoder\.transformer\.pos_conv_embed\.conv\.parametrizations\.weight\.original1$", "encoder.pos_conv.0.weight_v"),
    (r"^encoder\.transformer\.pos_conv_embed\.conv\.", "encoder.pos_conv.0."),
    (r"^encoder\.transformer\.layer_norm\.", "encoder.layer_norm."),
    (r"^encoder\.transformer\.layers\.(\d+)\.attention\.", r"encoder.layers.\1.self_attn."),
    (r"^encoder\.transformer\.layers\.(\d+)\.layer_norm\.", r"encoder.layers.\1.self_attn_layer_norm."),
    (r"^encoder\.transformer\.layers\.(\d+)\.feed_forward\.intermediate_dense\.", r"encoder.layers.\1.fc1."),
    (r"^encoder\.transformer\.layers\.(\d+)\.feed_forward\.output_dense\.", r"encoder.layers.\1.fc2."),
    (r"^encoder\.transformer\.layers\.(\d+)\.final_layer_norm\.", r"encoder.layers.\1.final_layer_norm."),
]


def is_torchaudio(state: dict) -> bool:
    """A torchaudio HuBERT state dict: ``Wav2Vec2Model``'s (its released bundles) or
    ``HuBERTPretrainModel``'s (``wav2vec2.`` before the same names)."""
    return any(re.match(r"^(wav2vec2\.)?encoder\.transformer\.layers\.0\.attention\.", k) for k in state)


def torchaudio_to_ours(state: dict) -> dict:
    """A torchaudio HuBERT state dict under hubertkit's names. Its norm layers are all
    ``layer_norm``: on every conv layer in layer-norm mode, on the first only with group
    norm, which fairseq names differently. A fine-tuning head (``aux``) is left out."""
    layer_norm_mode = any(re.match(r"^(wav2vec2\.)?feature_extractor\.conv_layers\.1\.layer_norm\.", k) for k in state)
    norm = r"feature_extractor.conv_layers.\1.2.1." if layer_norm_mode else r"feature_extractor.conv_layers.\1.2."
    fairseq = {}
    for key, value in state.items():
        if re.match(r"^(wav2vec2\.)?aux\.", key):
            continue
        for pattern, repl in _TORCHAUDIO:
            key = re.sub(pattern, repl, key)
        fairseq[re.sub(r"^feature_extractor\.conv_layers\.(\d+)\.layer_norm\.", norm, key)] = value
    return fairseq_to_ours(fairseq)


# ---------------------------------------------------------------------------------------
# transformers


HEAD_FILE = "hubertkit_head.pt"
HEAD_KEYS = ("final_proj.weight", "final_proj.bias", "label_embs_concat")


def hf_config(cfg: HubertConfig) -> dict:
    """A ``transformers`` ``HubertConfig`` dict for the same network."""
    if cfg.conv_layers[-1][0] == cfg.encoder_embed_dim:
        raise HubertkitError("transformers' Hubert always has a feature projection; conv dim must differ from encoder_embed_dim")
    dims, kernels, strides = zip(*cfg.conv_layers)
    return {
        "model_type": "hubert",
        "architectures": ["HubertModel"],
        "hidden_size": cfg.encoder_embed_dim,
        "num_hidden_layers": cfg.encoder_layers,
        "num_attention_heads": cfg.encoder_attention_heads,
        "intermediate_size": cfg.encoder_ffn_embed_dim,
        "hidden_act": cfg.activation_fn,
        "conv_dim": list(dims),
        "conv_kernel": list(kernels),
        "conv_stride": list(strides),
        "conv_bias": cfg.conv_bias,
        "feat_extract_norm": "layer" if cfg.extractor_mode == "layer_norm" else "group",
        "feat_extract_activation": "gelu",
        "feat_proj_layer_norm": True,
        "num_conv_pos_embeddings": cfg.conv_pos,
        "num_conv_pos_embedding_groups": cfg.conv_pos_groups,
        "do_stable_layer_norm": cfg.layer_norm_first,
        "layer_norm_eps": 1e-5,
        "hidden_dropout": cfg.dropout,
        "attention_dropout": cfg.attention_dropout,
        "activation_dropout": cfg.activation_dropout,
        "feat_proj_dropout": cfg.dropout_input,
        "layerdrop": cfg.encoder_layerdrop,
        "mask_time_prob": cfg.mask_prob,
        "mask_time_length": cfg.mask_length,
        "mask_feature_prob": cfg.mask_channel_prob,
        "mask_feature_length": cfg.mask_channel_length,
        "hubertkit": cfg.to_dict(),
    }


def export_hf(model: HubertModel, out: str | os.PathLike, prefix: str = "", extra: dict | None = None) -> Path:
    """Write a folder that ``transformers.HubertModel.from_pretrained`` loads. The
    pretraining head (``final_proj``, ``label_embs_concat``) has no ``transformers``
    counterpart; it goes to ``hubertkit_head.pt`` beside it, and the full config to
    ``config.json``'s ``hubertkit`` entry, so that ``import_hf`` restores everything.
    ``prefix`` and ``extra`` serve wrappers (``HubertForCTC``: ``hubert.`` and its head)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    tensors = {theirs: state[ours].contiguous() for ours, theirs in hf_names(model.cfg, prefix)}
    tensors.update(extra or {})
    save_torch(tensors, out / "pytorch_model.bin")
    head = {k: state[k] for k in HEAD_KEYS if k in state}  # absent in fine-tuned encoders
    if head:
        save_torch(head, out / HEAD_FILE)
    write_text(out / "config.json", json.dumps(hf_config(model.cfg.without_heads()), indent=2) + "\n")
    write_text(out / "preprocessor_config.json", json.dumps({
        "feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1, "sampling_rate": SAMPLE_RATE,
        "padding_value": 0.0, "do_normalize": model.cfg.normalize,
        "return_attention_mask": model.cfg.extractor_mode == "layer_norm",
    }, indent=2) + "\n")
    return out


def _hf_weights(folder: Path) -> dict:
    if (folder / "model.safetensors").is_file():
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise HubertkitError(f"{folder}/model.safetensors needs the safetensors package") from None
        return load_file(folder / "model.safetensors")
    if (folder / "pytorch_model.bin").is_file():
        try:
            return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise HubertkitError(f"{folder}/pytorch_model.bin pickles Python objects besides tensors, which could run "
                                 "code when loaded; it is refused (re-save its state dict, or use model.safetensors)") from None
        except (RuntimeError, EOFError) as e:
            raise HubertkitError(f"{folder}/pytorch_model.bin cannot be read (truncated?): {str(e).splitlines()[0]}") from None
    raise HubertkitError(f"{folder} has neither model.safetensors nor pytorch_model.bin")


HF_KEYS = ("conv_dim", "conv_kernel", "conv_stride", "feat_extract_norm", "conv_bias", "num_hidden_layers", "hidden_size",
           "intermediate_size", "num_attention_heads", "do_stable_layer_norm", "num_conv_pos_embeddings",
           "num_conv_pos_embedding_groups")  # what import_hf reads


def read_hf_config(folder: Path) -> dict:
    """A transformers folder's ``config.json``, refused unless it is a UTF-8 JSON object."""
    path = folder / "config.json"
    if not path.is_file():
        raise HubertkitError(f"{folder} has no config.json: not a transformers model folder")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HubertkitError(f"{path} is not valid UTF-8 JSON: {e}") from None
    if not isinstance(config, dict):
        raise HubertkitError(f"{path} holds a JSON {type(config).__name__}, not an object of settings")
    return config


def check_no_extra_layers(state: dict, cfg: HubertConfig, prefix: str, where: str) -> None:
    """Weights of encoder layers beyond the config's count would be ignored: refuse them."""
    pattern = re.compile(rf"{re.escape(prefix)}encoder\.layers\.(\d+)\.")
    found = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    extra = sorted(found - set(range(cfg.encoder_layers)))
    if extra:
        raise HubertkitError(f"{where} holds weights of {len(found)} encoder layers but its config describes "
                             f"{cfg.encoder_layers} (layers {extra[0]}..{extra[-1]} would be ignored): the config does "
                             "not describe these weights")


def import_hf(folder: str | os.PathLike, num_classes: list[int] | None = None, label_rate: float = 50.0) -> HubertModel:
    """A ``transformers`` Hubert folder (``HubertModel`` or ``HubertForCTC``) as a
    hubertkit model; the pretraining head is fresh unless the folder was exported here."""
    folder = Path(folder)
    c = read_hf_config(folder)
    if c.get("model_type") != "hubert":
        raise HubertkitError(f"{folder} holds a {c.get('model_type')!r} model, not Hubert")
    if not c.get("feat_proj_layer_norm", True):
        raise HubertkitError("transformers Hubert configs with feat_proj_layer_norm=false have no fairseq counterpart")
    missing = [k for k in HF_KEYS if k not in c]
    if missing:
        raise HubertkitError(f"{folder}/config.json lacks {', '.join(missing)}: not a complete transformers Hubert config")
    ours = c.get("hubertkit") or {}
    conv = list(zip(c["conv_dim"], c["conv_kernel"], c["conv_stride"]))
    if "conv_feature_layers" in ours and parse_conv_layers(ours["conv_feature_layers"]) == conv:
        conv_spec = ours["conv_feature_layers"]  # keep the user's spelling
    else:
        conv_spec = repr(conv)
    cfg = HubertConfig.from_dict({
        **ours,
        "extractor_mode": "layer_norm" if c["feat_extract_norm"] == "layer" else "default",
        "conv_feature_layers": conv_spec,
        "conv_bias": c["conv_bias"],
        "encoder_layers": c["num_hidden_layers"],
        "encoder_embed_dim": c["hidden_size"],
        "encoder_ffn_embed_dim": c["intermediate_size"],
        "encoder_attention_heads": c["num_attention_heads"],
        "activation_fn": c.get("hidden_act", "gelu"),
        "layer_norm_first": c["do_stable_layer_norm"],
        "conv_pos": c["num_conv_pos_embeddings"],
        "conv_pos_groups": c["num_conv_pos_embedding_groups"],
        "num_classes": num_classes or ours.get("num_classes") or [504],
        "label_rate": ours.get("label_rate", label_rate),
        "normalize": _hf_normalize(folder),
    })
    model = HubertModel(cfg)
    state = _hf_weights(folder)
    prefix = "hubert." if any(k.startswith("hubert.") for k in state) else ""
    for old, new in (("weight_g", "parametrizations.weight.original0"), ("weight_v", "parametrizations.weight.original1")):
        key = f"{prefix}encoder.pos_conv_embed.conv.{old}"
        if key in state:
            state[f"{prefix}encoder.pos_conv_embed.conv.{new}"] = state.pop(key)
    names = hf_names(cfg, prefix)
    missing = [theirs for _, theirs in names if theirs not in state]
    if missing:
        raise HubertkitError(f"{folder} lacks {len(missing)} parameter(s), e.g. {missing[:3]}")
    check_no_extra_layers(state, cfg, prefix, str(folder))
    weights = {o: state[t] for o, t in names}
    if (folder / HEAD_FILE).is_file():
        weights.update(torch.load(folder / HEAD_FILE, map_location="cpu", weights_only=True))
    model.load_state_dict(weights, strict=False)
    return model


def _hf_normalize(folder: Path) -> bool:
    """transformers keeps fairseq's task.normalize in the feature extractor's config."""
    pre = folder / "preprocessor_config.json"
    return bool(json.loads(pre.read_text()).get("do_normalize", False)) if pre.is_file() else False
