"""One loader for every HuBERT checkpoint hubertkit understands (the file format is
``checkpoint.py``'s), warm starts, and exports.

``load_model`` accepts a hubertkit checkpoint, a fairseq HuBERT ``.pt`` or a
``transformers`` Hubert folder, so every command that takes ``CKPT`` takes all three.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from hubertkit.data.manifest import manifest_path, read_manifest
from hubertkit.errors import HubertkitError
from hubertkit.model.checkpoint import (
    WHAT,
    Checkpoint,
    Loaded,
    check_weights,
    load_weights,
    read_path,
    write_checkpoint,
)
from hubertkit.model.convert import (
    export_hf,
    fairseq_model,
    import_hf,
    is_torchaudio,
    save_fairseq_checkpoint,
    torchaudio_to_ours,
)
from hubertkit.model.ctc import export_hf_ctc, load_ctc
from hubertkit.model.disentangle import build_hubert
from hubertkit.model.hubert import HubertModel

log = logging.getLogger(__name__)


def save_model(model: HubertModel, path: str | os.PathLike, **extra) -> None:
    """A ``hubert`` checkpoint (``model/checkpoint.py``): the config, the weights and how
    waveforms are read; loadable with ``torch.load(weights_only=True)``."""
    cfg = {"model": model.cfg.to_dict(), "task": {"normalize": model.cfg.normalize}}  # cfg.task: for older readers
    write_checkpoint(path, "hubert", {"cfg": cfg, "model": model.state_dict(), **extra})


def model_from_checkpoint(ck: Checkpoint) -> HubertModel:
    if ck.kind != "hubert":
        raise HubertkitError(f"{ck.path} holds {WHAT[ck.kind]}, not a pretrained HuBERT"
                             + (": use it with transcribe or export" if ck.kind == "ctc" else ""))
    return load_weights(build_hubert(ck.hubert_config), ck.state["model"], str(ck.path))


def load_model(source: str | os.PathLike | Loaded, trust_pickle: bool = False) -> HubertModel:
    """A model in eval mode from a hubertkit, fairseq or s3prl checkpoint or a transformers
    folder (``source``: its path, or what ``read_path`` read from it)."""
    loaded = read_path(source)
    path, state = loaded.path, loaded.contents
    if loaded.folder:
        return _finite(import_hf(path), path).eval()
    if loaded.checkpoint is not None:
        return model_from_checkpoint(loaded.checkpoint).eval()
    if isinstance(state, dict) and is_torchaudio(state):
        raise HubertkitError(f"{path} is a torchaudio state dict, which records no architecture: start training from it "
                             "(checkpoint.finetune_from_model) with a config of the same architecture")
    return _finite(fairseq_model(path, state, trust_pickle), path).eval()


# Parameters that belong to a label set or a disentangling head, not to the encoder: a
# warm start keeps each group if the checkpoint has it in the same shape, else starts it anew.
HEAD_GROUPS = {"label set": ("label_embs_concat", "final_proj."), "mask embedding": ("mask_emb",),
               "speaker adversary": ("speaker_adversary.",), "pitch output": ("pitch_head.",)}


def starting_weights(source: str | os.PathLike | Loaded, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The weights of any HuBERT checkpoint hubertkit reads (its own, fairseq's, a
    transformers folder, torchaudio's, s3prl's), under hubertkit's names: to start from
    (``source``: its path, or what ``read_path`` read from it)."""
    loaded = read_path(source)
    if isinstance(loaded.contents, dict) and is_torchaudio(loaded.contents):
        return check_weights(torchaudio_to_ours(loaded.contents), loaded.path)
    return load_model(loaded, trust_pickle).state_dict()


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


def _finite(model: HubertModel, path: Path) -> HubertModel:
    """A model imported from another program's file, refused when its weights are not
    finite (hubertkit's own files are checked by their reader)."""
    check_weights(model.state_dict(), path)
    return model


def export(ckpt: str | os.PathLike, out: str | os.PathLike, fmt: str = "hf", trust_pickle: bool = False) -> str:
    """``hubertkit export CKPT OUT --format hf|fairseq``; a fine-tuned (CTC) checkpoint
    becomes a ``transformers`` ``HubertForCTC`` folder."""

    if fmt not in ("hf", "fairseq"):
        raise HubertkitError(f"unknown --format {fmt!r}; choose 'hf' or 'fairseq'")
    loaded = read_path(ckpt)
    ck = loaded.checkpoint
    if ck is not None and ck.kind == "unit_asr":
        raise HubertkitError(f"{ckpt} holds a unit-ASR model; export converts HuBERT and fine-tuned (CTC) models")
    if ck is not None and ck.kind == "ctc":  # fine-tuned, or fine-tuning
        if fmt != "hf":
            raise HubertkitError("a fine-tuned (CTC) model exports to --format hf (transformers' HubertForCTC) only")
        export_hf_ctc(load_ctc(ckpt), out)
        return f"wrote {out}/ (load with transformers.HubertForCTC.from_pretrained({str(out)!r}))"
    model = load_model(loaded, trust_pickle)
    if fmt == "hf":
        export_hf(model, out)
        return f"wrote {out}/ (load with transformers.HubertModel.from_pretrained({str(out)!r}))"
    save_fairseq_checkpoint(model, out, **_training_record(loaded.contents))
    return f"wrote {out} (fairseq checkpoint: checkpoint_utils.load_model_ensemble_and_task loads it)"


def _hubertkit_only(tsv: Path) -> bool:
    """Whether a manifest uses hubertkit's third field (spans, archive members)."""
    try:
        return read_manifest(tsv).located
    except HubertkitError:  # not on this machine, or unreadable: nothing to say about it
        return False


def _training_record(state) -> dict:
    """From a hubertkit training checkpoint, what a fairseq export carries besides the
    weights: the label dictionaries, the task's data and labels, the update count."""
    if not isinstance(state, dict) or "dictionaries" not in state:
        return {}
    train_cfg = state.get("cfg", {}).get("train", {})
    task = train_cfg.get("task", {})
    fields = {k: task[k] for k in ("data", "label_dir", "labels") if task.get(k) is not None}
    split = train_cfg.get("dataset", {}).get("train_subset", "train")
    if "data" in fields and _hubertkit_only(manifest_path(fields["data"], split)):
        log.warning("%s lists spans or archive members, which fairseq cannot read: the export leaves task.data out "
                    "(`hubertkit cut` writes them out as files, with a manifest fairseq reads)", manifest_path(fields["data"], split))
        del fields["data"]
    return {"dictionaries": state["dictionaries"], "num_updates": state.get("trainer", {}).get("num_updates", 0),
            **({"task": fields} if fields else {})}
