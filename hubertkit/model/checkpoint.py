"""Every checkpoint file hubertkit writes, and the one reader that checks a file before
any code uses it.

A checkpoint is a dict saved with ``torch.save`` and read with ``weights_only=True``:
``format``, ``version``, ``kind`` (what the weights are: ``hubert``, ``ctc`` or
``unit_asr``), ``cfg`` (``cfg["model"]`` rebuilds the network) and ``model`` (its
weights), plus the kind's own fields. A training checkpoint adds ``optimizer``,
``scaler`` and ``trainer``, which resume the run exactly. Version 1 files carried no
``kind``; they are still read, their kind told from their fields.

Whatever is wrong in a file (not a PyTorch file, a missing field, a string where a
number belongs, a missing or mis-shaped weight) is refused here with the file and the
field named, not met later as a traceback.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hubertkit.config.model import HubertConfig
from hubertkit.data.dictionary import reading_fairseq_dictionaries
from hubertkit.errors import HubertkitError
from hubertkit.fileio import save_torch

FORMAT = "hubertkit.checkpoint"
VERSION = 2
LEGACY_CTC_FORMAT = "hubertkit.ctc"  # version 1 wrote saved CTC models under their own format name
KINDS = {  # the fields each kind adds to cfg and model, with their types
    "hubert": {},
    "ctc": {"symbols": list, "final_dropout": (int, float)},
    "unit_asr": {},
}
TRAINING = {"optimizer": dict, "scaler": dict, "trainer": dict}
TRAINER = {"num_updates": int, "epoch": int, "batch_in_epoch": int, "best": (int, float), "torch_rng": torch.Tensor,
           "cuda_rng": list}
WHAT = {"hubert": "a pretrained HuBERT", "ctc": "a fine-tuned (CTC) model", "unit_asr": "a unit-ASR model"}


@dataclass(frozen=True)
class Checkpoint:
    """A hubertkit checkpoint whose fields have been checked."""

    path: Path
    kind: str
    state: dict

    @property
    def training(self) -> bool:
        return "trainer" in self.state

    @property
    def model_cfg(self) -> dict:
        return self.state["cfg"]["model"]

    @property
    def hubert_config(self) -> HubertConfig:
        """The network ``cfg.model`` describes (``hubert`` and ``ctc`` kinds); files written
        before the model recorded ``normalize`` have it in ``cfg.task`` only."""
        task = self.state["cfg"].get("task") or self.state["cfg"].get("train", {}).get("task", {})
        try:
            return HubertConfig.from_dict({"normalize": bool(task.get("normalize", False)), **self.model_cfg})
        except HubertkitError as e:
            raise HubertkitError(f"{self.path}: its cfg.model does not describe a model: {e}") from None


def write_checkpoint(path: str | os.PathLike, kind: str, state: dict) -> None:
    """Write ``state`` as a checkpoint of ``kind`` via a temporary file and a rename: a
    crash or a full disk never leaves a truncated file, and an older file at ``path``
    stays intact."""
    if kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}")
    save_torch({"format": FORMAT, "version": VERSION, "kind": kind, **state}, path, "checkpoint")


def read_state(path: str | os.PathLike):
    """The file's contents read with ``weights_only=True`` (fairseq ``Dictionary`` objects
    as plain fields), or None when it pickles other Python objects (fairseq's config
    classes), which only a trusted load may read."""
    path = Path(path)
    if not path.is_file():
        raise HubertkitError(f"checkpoint {path} does not exist" if not path.exists() else f"checkpoint {path} is not a file")
    try:
        with reading_fairseq_dictionaries():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower() and _looks_like_torch(path):
            return None
        reason = str(e).splitlines()[0]
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError, TypeError, AttributeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise HubertkitError(f"{path} cannot be read as a checkpoint (empty, truncated or not a PyTorch file): {reason}")


def _looks_like_torch(path: Path) -> bool:
    """A ``torch.save`` file: a zip archive, or the legacy format's pickle protocol byte."""
    with open(path, "rb") as f:
        head = f.read(2)
    return zipfile.is_zipfile(path) or head[:1] == b"\x80"


@dataclass(frozen=True)
class Loaded:
    """A model's path as read once, for the readers that try one format after another: the
    file's ``contents`` (``read_state``'s answer: None for a pickled fairseq file) and,
    when they are hubertkit's, the checked ``checkpoint``; a folder (a transformers model)
    is left unread (``folder``)."""

    path: Path
    folder: bool = False
    contents: Any = None
    checkpoint: Checkpoint | None = None


def read_path(path: str | os.PathLike | Loaded) -> Loaded:
    """``path`` read once (a ``Loaded`` is returned as it is, so readers can take either)."""
    if isinstance(path, Loaded):
        return path
    path = Path(path)
    if path.is_dir():
        return Loaded(path, folder=True)
    contents = read_state(path)
    return Loaded(path, contents=contents, checkpoint=_checked(path, contents))


def read_checkpoint(path: str | os.PathLike) -> Checkpoint | None:
    """The hubertkit checkpoint at ``path``, checked; None when the file is another
    program's (fairseq, torchaudio, s3prl)."""
    return _checked(Path(path), read_state(path))


def _checked(path: Path, state) -> Checkpoint | None:
    if isinstance(state, dict) and "format" not in state and state.get("kind") in KINDS:
        raise HubertkitError(f"{path} is a hubertkit checkpoint without its format field: the file is damaged or edited")
    if not isinstance(state, dict) or state.get("format") not in (FORMAT, LEGACY_CTC_FORMAT):
        return None
    kind = state.get("kind") or _legacy_kind(state)
    if kind not in KINDS:
        raise HubertkitError(f"{path} holds a checkpoint of kind {kind!r}, which this hubertkit does not know "
                             f"(it knows {', '.join(KINDS)}): was it written by a newer version?")
    if not isinstance(state.get("version", 1), int) or state.get("version", 1) > VERSION:
        raise HubertkitError(f"{path} is a version-{state.get('version')} checkpoint; this hubertkit reads versions "
                             f"1 to {VERSION}: upgrade hubertkit")
    fields = {"cfg": dict, "model": dict, **KINDS[kind], **(TRAINING if "trainer" in state else {})}
    _check_fields(state, fields, path, "")
    _check_fields(state["cfg"], {"model": dict}, path, "cfg.")
    if "trainer" in state:
        _check_fields(state["trainer"], TRAINER, path, "trainer.")
    bad = [k for k, v in state["model"].items() if not (isinstance(k, str) and torch.is_tensor(v))]
    if bad:
        raise HubertkitError(f"{path}: model holds {bad[0]!r}, which is not a named tensor; the file is damaged")
    check_weights(state["model"], path)
    if kind == "ctc" and not all(isinstance(s, str) for s in state["symbols"]):
        raise HubertkitError(f"{path}: symbols must be a list of strings (the letters of dict.ltr.txt)")
    if kind == "ctc" and not 0 <= state["final_dropout"] < 1:  # NaN too
        raise HubertkitError(f"{path}: final_dropout must be in [0, 1), got {state['final_dropout']}; the file is damaged")
    return Checkpoint(path, kind, state)


def check_weights(weights: dict, path: str | os.PathLike) -> dict:
    """Weights every model here can use: dense, real floating point, finite. A NaN weight
    computes NaN features, losses and empty transcripts with exit code 0; an integer,
    boolean, complex or sparse one is a damaged or foreign file."""
    for name, w in weights.items():
        if w.layout != torch.strided or not w.is_floating_point():
            what = "sparse" if w.layout != torch.strided else str(w.dtype).removeprefix("torch.")
            raise HubertkitError(f"{path}: weight {name} is a {what} tensor, not a dense floating-point one; the file "
                                 "is damaged or not a model's")
    bad = [name for name, w in weights.items() if not torch.isfinite(w).all()]
    if bad:
        raise HubertkitError(f"checkpoint {path} has NaN or infinite weights in {len(bad)} tensor(s), e.g. {bad[0]} "
                             "(a diverged run?): use an earlier checkpoint")
    return weights


def _legacy_kind(state: dict) -> str:
    """A version-1 file's kind, from the fields it carries."""
    if state.get("format") == LEGACY_CTC_FORMAT or "symbols" in state:
        return "ctc"
    model_cfg = state.get("cfg", {}).get("model") if isinstance(state.get("cfg"), dict) else None
    return "unit_asr" if isinstance(model_cfg, dict) and "num_units" in model_cfg else "hubert"


def _check_fields(state: dict, fields: dict, path: Path, prefix: str) -> None:
    for name, types in fields.items():
        if name not in state:
            raise HubertkitError(f"{path} has no {prefix}{name}: it is not a complete hubertkit checkpoint "
                                 "(damaged, or edited)")
        value = state[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in _tuple(types)):
            raise HubertkitError(f"{path}: {prefix}{name} is a {type(value).__name__} ({_short(value)}), "
                                 f"not a {' or '.join(t.__name__ for t in _tuple(types))}; the file is damaged")


def _tuple(types) -> tuple:
    return types if isinstance(types, tuple) else (types,)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def require(path: str | os.PathLike, kinds: tuple[str, ...], use: str) -> Checkpoint:
    """The hubertkit checkpoint at ``path``, which must hold one of ``kinds``; ``use``
    says what the command does with it, for the refusal."""
    ck = read_checkpoint(path)
    if ck is None:
        raise HubertkitError(f"{path} is not a hubertkit checkpoint; {use} needs {' or '.join(WHAT[k] for k in kinds)}")
    if ck.kind not in kinds:
        raise HubertkitError(f"{path} holds {WHAT[ck.kind]}; {use} needs {' or '.join(WHAT[k] for k in kinds)}")
    return ck


def load_weights(module: nn.Module, weights: dict, where: str) -> nn.Module:
    """``module.load_state_dict(weights)``, after naming every weight that is missing,
    unexpected or of another shape than the config builds."""
    own = module.state_dict()
    missing = [k for k in own if k not in weights]
    extra = [k for k in weights if k not in own]
    shapes = [f"{k} {tuple(weights[k].shape)} (the config builds {tuple(own[k].shape)})" for k in own
              if k in weights and torch.is_tensor(weights[k]) and weights[k].shape != own[k].shape]
    problems = [f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} ({len(keys)})"
                for what, keys in (("shapes differ", shapes), ("missing", missing), ("unexpected", extra)) if keys]
    if problems:
        raise HubertkitError(f"{where}: the weights do not fit the model its config describes; {'; '.join(problems)}. "
                             "The file is damaged, or its weights and config come from different models")
    module.load_state_dict(weights)
    return module
