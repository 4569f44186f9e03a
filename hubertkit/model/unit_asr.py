"""Unit-based ASR: text from discrete units, as in the recipe's "hubert cluster id asr".

``UnitBart`` is ``transformers``' BART (sequence to sequence, units in, letters out),
saved as a plain Hugging Face folder. ``UnitCTC`` is the baseline: a Transformer
encoder over units with a CTC output over the same letters, each unit position
upsampled so that a transcript longer than its deduplicated units still fits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from hubertkit.config.train import UnitAsrModelConfig
from hubertkit.data.unit_vocab import BOS, EOS, PAD, UnitVocab, hf_tokenizer
from hubertkit.errors import HubertkitError
from hubertkit.fileio import atomic_dir
from hubertkit.model.checkpoint import load_weights, require
from hubertkit.model.decode import greedy_ids
from hubertkit.optional import require_transformers

CONFIG_KEY = "hubertkit_unit_asr"  # the architecture, inside a saved folder's config.json


@dataclass(frozen=True)
class UnitAsrArch(UnitAsrModelConfig):
    """What rebuilds a unit-ASR network: the ``model.*`` sizes, and what the data gave."""

    arch: str = "bart"  # or "ctc"
    symbols: list[str] = field(default_factory=list)
    num_units: int = 0

    @property
    def vocab(self) -> UnitVocab:
        return UnitVocab(tuple(self.symbols), self.num_units)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class UnitBart(nn.Module):
    def __init__(self, cfg: UnitAsrArch, bart: nn.Module | None = None):
        """A new BART sized by ``cfg``, or ``bart`` (a loaded one) with ``cfg``'s vocabulary."""
        super().__init__()
        self.cfg = cfg
        if bart is not None:
            self.bart = bart
            return
        BartConfig, BartForConditionalGeneration, GenerationConfig = require_transformers(
            "BartConfig", "BartForConditionalGeneration", "GenerationConfig")
        config = BartConfig(
            vocab_size=cfg.vocab.size, d_model=cfg.encoder_embed_dim,
            encoder_layers=cfg.encoder_layers, encoder_ffn_dim=cfg.encoder_ffn_embed_dim,
            encoder_attention_heads=cfg.encoder_attention_heads, decoder_layers=cfg.decoder_layers,
            decoder_ffn_dim=cfg.decoder_ffn_embed_dim, decoder_attention_heads=cfg.decoder_attention_heads,
            dropout=cfg.dropout, attention_dropout=cfg.attention_dropout, activation_dropout=cfg.activation_dropout,
            max_position_embeddings=max(cfg.max_source_positions, cfg.max_target_positions),
            pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, decoder_start_token_id=EOS, forced_eos_token_id=EOS,
        )
        setattr(config, CONFIG_KEY, cfg.to_dict())
        self.bart = BartForConditionalGeneration(config)
        self.bart.generation_config = GenerationConfig(
            bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD, decoder_start_token_id=EOS, forced_eos_token_id=EOS,
            num_beams=cfg.beam, max_length=cfg.max_target_positions,
        )

    @property
    def encoder(self) -> nn.Module:
        return self.bart.model.encoder

    def forward(self, source: torch.Tensor, padding_mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Logits ``[batch, target length, vocab]`` with teacher forcing (``target`` ends in ``</s>``)."""
        decoder_input = torch.cat([torch.full_like(target[:, :1], EOS), target[:, :-1]], dim=1)
        return self.bart(input_ids=source, attention_mask=(~padding_mask).long(), decoder_input_ids=decoder_input,
                         decoder_attention_mask=(decoder_input != PAD).long(), use_cache=False).logits

    @torch.no_grad()
    def decode(self, source: torch.Tensor, padding_mask: torch.Tensor, beam: int | None = None) -> list[list[int]]:
        out = self.bart.generate(input_ids=source, attention_mask=(~padding_mask).long(), num_beams=beam or self.cfg.beam)
        return [[i for i in row.tolist() if i > EOS] for row in out]


class UnitCTC(nn.Module):
    def __init__(self, cfg: UnitAsrArch):
        super().__init__()
        self.cfg = cfg
        vocab = cfg.vocab
        self.embed = nn.Embedding(vocab.size, cfg.encoder_embed_dim, padding_idx=PAD)
        self.positions = nn.Embedding(cfg.max_source_positions, cfg.encoder_embed_dim)
        layer = nn.TransformerEncoderLayer(cfg.encoder_embed_dim, cfg.encoder_attention_heads, cfg.encoder_ffn_embed_dim,
                                           cfg.dropout, activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.encoder_layers, norm=nn.LayerNorm(cfg.encoder_embed_dim),
                                             enable_nested_tensor=False)
        self.proj = nn.Linear(cfg.encoder_embed_dim, vocab.first_unit)  # specials (blank = <s>) and letters

    def forward(self, source: torch.Tensor, padding_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs ``[batch, frames, letters]`` and the frames' padding mask."""
        x = self.embed(source) + self.positions(torch.arange(source.shape[1], device=source.device))
        x = self.encoder(x, src_key_padding_mask=padding_mask)
        up = self.cfg.ctc_upsample
        return self.proj(x).repeat_interleave(up, dim=1).log_softmax(-1), padding_mask.repeat_interleave(up, dim=1)

    @torch.no_grad()
    def decode(self, source: torch.Tensor, padding_mask: torch.Tensor, beam: int | None = None) -> list[list[int]]:
        log_probs, pad = self(source, padding_mask)
        return [greedy_ids(lp, int((~p).sum())) for lp, p in zip(log_probs.cpu(), pad.cpu())]


def build_unit_asr(cfg: UnitAsrArch) -> nn.Module:
    if cfg.arch not in ("bart", "ctc"):
        raise HubertkitError(f"unit-ASR architecture {cfg.arch!r}: expected bart or ctc")
    return UnitBart(cfg) if cfg.arch == "bart" else UnitCTC(cfg)


@contextlib.contextmanager
def _no_transformers_progress():
    """transformers draws its own progress bars when saving and loading; hubertkit's
    commands have theirs (and ``-q``)."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def save_unit_bart(model: UnitBart, out: str | os.PathLike) -> Path:
    """A folder that ``BartForConditionalGeneration`` and ``AutoTokenizer`` load as they are."""
    with atomic_dir(out) as tmp, _no_transformers_progress():
        model.bart.save_pretrained(tmp)
        hf_tokenizer(model.cfg.vocab).save_pretrained(tmp)
    return Path(out)


def load_unit_asr(path: str | os.PathLike) -> nn.Module:
    """A unit-ASR model from a saved folder or from a ``unit-asr train`` checkpoint."""
    path = Path(path)
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file() or CONFIG_KEY not in json.loads(config.read_text()):
            raise HubertkitError(f"{path} is not a unit-ASR folder written by hubertkit unit-asr train")
        BartForConditionalGeneration, = require_transformers("BartForConditionalGeneration")
        arch = UnitAsrArch(**json.loads(config.read_text())[CONFIG_KEY])
        try:
            with _no_transformers_progress():
                return UnitBart(arch, BartForConditionalGeneration.from_pretrained(path)).eval()
        except (OSError, ValueError, RuntimeError, pickle.UnpicklingError) as e:  # e.g. weights that pickle objects
            raise HubertkitError(f"{path}: its BART weights cannot be loaded safely: {str(e).splitlines()[0]}") from None
    ck = require(path, ("unit_asr",), "unit-asr transcribe")
    try:
        arch = UnitAsrArch(**ck.model_cfg)
    except TypeError as e:
        raise HubertkitError(f"{path}: its cfg.model does not describe a unit-ASR model: {e}") from None
    return load_weights(build_unit_asr(arch), ck.state["model"], str(path)).eval()
