"""``hubertkit unit-asr``: train a units-to-text model on the shared trainer (its
checkpoints, resume, progress and logs), and transcribe units, or audio through a
HuBERT layer and a k-means model, with it."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from hubertkit.config import config_dir_default
from hubertkit.data.audio import read_audio
from hubertkit.data.manifest import lookup_by_path
from hubertkit.data.text import normalize_text, read_texts
from hubertkit.data.unit_dataset import read_units
from hubertkit.data.unit_vocab import PAD, dedup
from hubertkit.errors import HubertkitError
from hubertkit.features.hubert import MAX_CHUNK
from hubertkit.model.unit_asr import UnitBart, load_unit_asr, save_unit_bart
from hubertkit.progress import progress_bar
from hubertkit.recipes.discrete_units import unit_labeller
from hubertkit.recipes.transcribe import Transcript, audio_inputs
from hubertkit.train.checkpoint import BEST, LAST
from hubertkit.train.trainer import train

MODEL_DIR = "model"  # the Hugging Face folder beside the checkpoints


def unit_asr_config(units, texts, valid_units=None, config_name: str = "bart_base", overrides: list[str] = (),
                    config_dir: str | None = None, save_dir=None) -> tuple[str, list[str], str]:
    """The training config ``train_unit_asr`` runs: name, overrides and folder."""
    given = [f"task.data={units}", f"task.texts={texts}"]
    given += [f"task.valid_data={valid_units}"] if valid_units else []
    given += [f"checkpoint.save_dir={save_dir}"] if save_dir else []
    return config_name, [*given, *overrides], config_dir or str(config_dir_default() / "unit_asr")


def train_unit_asr(units: str | os.PathLike, texts: str | os.PathLike, valid_units: str | os.PathLike | None = None,
                   config_name: str = "bart_base", overrides: list[str] = (), config_dir: str | None = None,
                   save_dir: str | os.PathLike | None = None, progress: bool = True) -> dict:
    """Train on ``units`` (JSONL) and ``texts``; a BART model is then saved from the best
    checkpoint as a Hugging Face folder, ``SAVE_DIR/model``."""

    result = train(*unit_asr_config(units, texts, valid_units, config_name, overrides, config_dir, save_dir), progress)
    if int(os.environ.get("RANK", "0")) != 0:
        return result
    save = Path(result["save_dir"])
    ckpt = save / BEST if (save / BEST).is_file() else save / LAST
    model = load_unit_asr(ckpt)
    result["model"] = str(save_unit_bart(model, save / MODEL_DIR) if isinstance(model, UnitBart) else ckpt)
    return result


def _unit_inputs(units_path, audio, hubert, km, layer, max_chunk, trust_pickle, progress) -> list[tuple[str, list[int]]]:
    """(key, deduplicated units) per utterance, from a units file or from audio."""
    if (units_path is None) == (audio is None):
        raise HubertkitError("give either a units JSONL file or --audio files")
    if units_path is not None:
        return [(r["utt"], r["units"]) for r in read_units(units_path)]
    if hubert is None or km is None or layer is None:
        raise HubertkitError("--audio needs --hubert CKPT, --km KM_PATH and --layer L (the units the model was trained on)")
    labeller = unit_labeller(hubert, km, layer, max_chunk, trust_pickle)
    return [(key, dedup(labeller(read_audio(u, where="unit-asr transcribe")))[0])
            for u, key in progress_bar(audio_inputs(audio), unit="utt", desc="units", disable=not progress)]


@torch.inference_mode()
def transcribe_units(model_path: str | os.PathLike, units: str | os.PathLike | None = None, audio: list[str] | None = None,
                     hubert: str | None = None, km: str | None = None, layer: int | None = None, beam: int | None = None,
                     batch_size: int = 16, references: str | os.PathLike | None = None, max_chunk: int = MAX_CHUNK,
                     trust_pickle: bool = False, progress: bool = True) -> list[Transcript]:
    """Text for each utterance of a units file, or of audio files (audio → units → text)."""
    model = load_unit_asr(model_path)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    vocab, limit = model.cfg.vocab, model.cfg.max_source_positions
    inputs = _unit_inputs(units, audio, hubert, km, layer, max_chunk, trust_pickle, progress)
    table = read_texts(references) if references else None
    out = []
    with progress_bar(total=len(inputs), unit="utt", desc="unit-asr", disable=not progress) as bar:
        for b in range(0, len(inputs), batch_size):
            group = inputs[b : b + batch_size]
            seqs = []
            for key, u in group:
                if len(u) > limit:
                    raise HubertkitError(f"{key}: {len(u)} units, more than the model's {limit} source positions")
                seqs.append(torch.tensor(vocab.encode_units(u, key)))
            source = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=PAD).to(device)
            for (key, _), ids in zip(group, model.decode(source, source == PAD, beam)):
                ref = normalize_text(lookup_by_path(table, key, "reference", str(references))) if table is not None else None
                out.append(Transcript(key, vocab.decode_letters(ids), ref))
            bar.update(len(group))
    return out
