"""One loader for every HuBERT checkpoint hubertkit understands, and its own format.

``load_model`` accepts a hubertkit checkpoint, a fairseq HuBERT ``.pt`` or a
``transformers`` Hubert folder, so every command that takes ``CKPT`` takes all three.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from hubertkit.config.model import HubertConfig
from hubertkit.data.dictionary import reading_fairseq_dictionaries
from hubertkit.errors import HubertkitError
from hubertkit.fileio import atomic_path
from hubertkit.model.convert import (
    export_hf,
    from_fairseq,
    import_hf,
    load_fairseq_checkpoint,
    save_fairseq_checkpoint,
)
from hubertkit.model.ctc import FORMAT as CTC_FORMAT
from hubertkit.model.ctc import export_hf_ctc, load_ctc
from hubertkit.model.hubert import HubertModel

FORMAT = "hubertkit.checkpoint"


def load_checkpoint(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise HubertkitError(f"cannot read checkpoint {path}: {e}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "trainer" not in state:
        raise HubertkitError(f"{path} is not a hubertkit training checkpoint")
    return state


def save_model(model: HubertModel, path: str | os.PathLike, **extra) -> None:
    """``{"format", "cfg": {"model": ...}, "model": state_dict, **extra}``, atomically;
    loadable with ``torch.load(weights_only=True)``."""
    cfg = {"model": model.cfg.to_dict(), "task": {"normalize": model.normalize_waveform}}
    state = {"format": FORMAT, "version": 1, "cfg": cfg, "model": model.state_dict(), **extra}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def model_from_checkpoint(ckpt: dict) -> HubertModel:
    if "symbols" in ckpt:
        raise HubertkitError("this is a fine-tuned (CTC) checkpoint: use it with transcribe or export")
    if ckpt.get("format") == FORMAT:
        cfg = ckpt["cfg"]
        model = HubertModel(HubertConfig.from_dict(cfg["model"]))
        model.load_state_dict(ckpt["model"])
        task = cfg.get("task") or cfg.get("train", {}).get("task", {})
        model.normalize_waveform = bool(task.get("normalize", False))
        return model
    return from_fairseq(ckpt)


def _safe_state(path: Path):
    """The checkpoint read with ``weights_only=True`` (fairseq ``Dictionary`` objects as
    plain fields), or None when it pickles other objects (fairseq's config classes)."""
    try:
        with reading_fairseq_dictionaries():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise HubertkitError(f"{path} cannot be read as a checkpoint (empty, truncated or not a PyTorch file): "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def load_model(path: str | os.PathLike, trust_pickle: bool = False, state=None) -> HubertModel:
    """A model in eval mode from a hubertkit/fairseq checkpoint or a transformers folder
    (``state``: the file's contents, when already read)."""
    path = Path(path)
    if path.is_dir():
        return _finite(import_hf(path), path).eval()
    if not path.is_file():
        raise HubertkitError(f"checkpoint {path} does not exist")
    ckpt = state if state is not None else _safe_state(path)
    if ckpt is None:  # fairseq's pickled config objects; that loader explains the options
        return _finite(load_fairseq_checkpoint(path, trust_pickle), path).eval()
    if not isinstance(ckpt, dict):
        raise HubertkitError(f"{path} is not a HuBERT checkpoint")
    return _finite(model_from_checkpoint(ckpt), path).eval()


def _finite(model: HubertModel, path: Path) -> HubertModel:
    """A model with NaN or infinite weights computes NaN features (and k-means on them
    labels every frame alike) with exit code 0: refuse it when it is loaded."""
    bad = [n for n, p in model.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
    if bad:
        raise HubertkitError(f"checkpoint {path} has NaN or infinite weights in {len(bad)} tensor(s), e.g. {bad[0]} "
                             "(a diverged run?): use an earlier checkpoint")
    return model


def export(ckpt: str | os.PathLike, out: str | os.PathLike, fmt: str = "hf", trust_pickle: bool = False) -> str:
    """``hubertkit export CKPT OUT --format hf|fairseq``; a fine-tuned (CTC) checkpoint
    becomes a ``transformers`` ``HubertForCTC`` folder."""

    if fmt not in ("hf", "fairseq"):
        raise HubertkitError(f"unknown --format {fmt!r}; choose 'hf' or 'fairseq'")
    state = _safe_state(Path(ckpt)) if Path(ckpt).is_file() else None  # read once
    if isinstance(state, dict) and (state.get("format") == CTC_FORMAT or "symbols" in state):  # fine-tuned, or fine-tuning
        if fmt != "hf":
            raise HubertkitError("a fine-tuned (CTC) model exports to --format hf (transformers' HubertForCTC) only")
        export_hf_ctc(load_ctc(ckpt), out)
        return f"wrote {out}/ (load with transformers.HubertForCTC.from_pretrained({str(out)!r}))"
    model = load_model(ckpt, trust_pickle, state)
    if fmt == "hf":
        export_hf(model, out)
        return f"wrote {out}/ (load with transformers.HubertModel.from_pretrained({str(out)!r}))"
    save_fairseq_checkpoint(model, out, **_training_record(state))
    return f"wrote {out} (fairseq checkpoint: checkpoint_utils.load_model_ensemble_and_task loads it)"


def _training_record(state) -> dict:
    """From a hubertkit training checkpoint, what a fairseq export carries besides the
    weights: the label dictionaries, the task's data and labels, the update count."""
    if not isinstance(state, dict) or "dictionaries" not in state:
        return {}
    task = state.get("cfg", {}).get("train", {}).get("task", {})
    fields = {k: task[k] for k in ("data", "label_dir", "labels") if task.get(k) is not None}
    return {"dictionaries": state["dictionaries"], "num_updates": state.get("trainer", {}).get("num_updates", 0),
            **({"task": fields} if fields else {})}
