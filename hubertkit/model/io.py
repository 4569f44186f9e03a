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
    is_s3prl,
    is_torchaudio,
    load_fairseq_checkpoint,
    s3prl_to_fairseq,
    save_fairseq_checkpoint,
    torchaudio_to_ours,
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


def read_training_checkpoint(path: Path) -> dict | None:
    """A hubertkit training checkpoint's contents, or None when ``path`` holds another kind
    of checkpoint (fairseq's, a model export, ...)."""
    state = _safe_state(path)
    return state if isinstance(state, dict) and state.get("format") == FORMAT and "trainer" in state else None


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
    if is_torchaudio(ckpt):
        raise HubertkitError(f"{path} is a torchaudio state dict, which records no architecture: start training from it "
                             "(checkpoint.finetune_from_model) with a config of the same architecture")
    return _finite(model_from_checkpoint(s3prl_to_fairseq(ckpt) if is_s3prl(ckpt) else ckpt), path).eval()


# Parameters that belong to a label set or a disentangling head, not to the encoder: a
# warm start keeps each group if the checkpoint has it in the same shape, else starts it anew.
HEAD_GROUPS = {"label set": ("label_embs_concat", "final_proj."), "mask embedding": ("mask_emb",),
               "speaker adversary": ("speaker_adversary.",), "pitch output": ("pitch_head.",)}


def starting_weights(path: str | os.PathLike, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The weights of any HuBERT checkpoint hubertkit reads (its own, fairseq's, a
    transformers folder, torchaudio's, s3prl's), under hubertkit's names: to start from."""
    path = Path(path)
    state = _safe_state(path) if path.is_file() else None
    if isinstance(state, dict) and is_torchaudio(state):
        return _finite_weights(torchaudio_to_ours(state), path)
    return load_model(path, trust_pickle, state).state_dict()


def warm_start(target: dict, source: dict, where: str) -> tuple[dict, list[str]]:
    """``target`` (a freshly built model's state) with ``source``'s weights: the encoder
    must match key for key and shape for shape (what differs is named); each head group
    is taken when ``source`` has it in the same shapes, else kept fresh. Returns the
    merged state and the head groups that start fresh."""
    def group(key):
        return next((g for g, prefixes in HEAD_GROUPS.items() if key.startswith(prefixes)), None)

    encoder = [k for k in target if group(k) is None]
    missing = [k for k in encoder if k not in source]
    extra = [k for k in source if k not in target and group(k) is None]
    shapes = [f"{k} {tuple(source[k].shape)} (configured {tuple(target[k].shape)})" for k in encoder
              if k in source and source[k].shape != target[k].shape]
    if missing or extra or shapes:
        problems = [f"{what}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''} ({len(keys)})"
                    for what, keys in (("shapes differ", shapes), ("missing from it", missing), ("not in the configured model", extra)) if keys]
        raise HubertkitError(f"{where} does not fit the configured model's encoder; {'; '.join(problems)}. Use the config "
                             "of the checkpoint's architecture (e.g. hubert_base_librispeech for a Base checkpoint)")
    fresh = sorted({group(k) for k in target if group(k) and (k not in source or source[k].shape != target[k].shape)})
    merged = {k: target[k] if group(k) in fresh else source[k] for k in target}
    return merged, fresh


def _finite_weights(state: dict, path: Path) -> dict:
    bad = [n for n, p in state.items() if p.is_floating_point() and not torch.isfinite(p).all()]
    if bad:
        raise HubertkitError(f"checkpoint {path} has NaN or infinite weights in {len(bad)} tensor(s), e.g. {bad[0]} "
                             "(a diverged run?): use an earlier checkpoint")
    return state


def _finite(model: HubertModel, path: Path) -> HubertModel:
    """A model with NaN or infinite weights computes NaN features (and k-means on them
    labels every frame alike) with exit code 0: refuse it when it is loaded."""
    _finite_weights(model.state_dict(), path)
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
