"""HuBERT for CTC: fairseq's ``HubertCtc`` and ``transformers``' ``HubertForCTC``. It is
the pretrained encoder, dropout, and a linear map from each 20 ms frame to the letters.

Output classes follow fairseq's letter dictionary: ``<s>`` (index 0, the CTC blank),
``<pad>``, ``</s>``, ``<unk>``, then the symbols of ``dict.ltr.txt`` (``|`` is the
word boundary). ``transformers`` names index 0 ``<pad>`` and uses it as its blank, so
an export keeps every index and only renames the specials.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import torch
from torch import nn

from hubertkit.config.model import HubertConfig
from hubertkit.data.dictionary import (
    SPECIALS,  # fairseq's Dictionary; <s> is the CTC blank
)
from hubertkit.errors import HubertkitError
from hubertkit.fileio import write_text
from hubertkit.model.checkpoint import load_weights, require, write_checkpoint
from hubertkit.model.convert import _hf_weights, export_hf, hf_config, import_hf, read_hf_config
from hubertkit.model.hubert import HubertModel

HF_SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")  # transformers' names for the same indices
BLANK = 0


class HubertCTC(nn.Module):
    def __init__(self, cfg: HubertConfig, symbols: list[str], final_dropout: float = 0.0):
        super().__init__()
        self.hubert = HubertModel(cfg.without_heads())
        self.hubert.remove_pretraining_modules()
        self.symbols = list(symbols)  # dict.ltr.txt, without the specials
        self.final_dropout = nn.Dropout(final_dropout)
        self.proj = nn.Linear(cfg.encoder_embed_dim, len(SPECIALS) + len(self.symbols))
        nn.init.xavier_uniform_(self.proj.weight)  # fairseq's Linear
        nn.init.zeros_(self.proj.bias)
        self.freeze_finetune_updates = 0  # the encoder is frozen for the first this many updates

    def load_encoder(self, pretrained: HubertModel) -> None:
        """Take the pretrained model's encoder weights (not its pretraining head)."""
        own = self.hubert.state_dict()
        self.hubert.load_state_dict({k: v for k, v in pretrained.state_dict().items() if k in own})

    @property
    def vocab(self) -> list[str]:
        return list(SPECIALS) + self.symbols

    def forward(self, wav: torch.Tensor, padding_mask: torch.Tensor | None = None, mask: bool = False,
                generator: torch.Generator | None = None, num_updates: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probabilities ``[batch, frames, classes]`` (float32) and the frame padding mask.
        Waveforms come normalised already where ``hubert.cfg.normalize`` says so (the
        dataset and ``transcribe`` do it per utterance, as in pretraining)."""
        h = self.hubert
        h.check_input(wav)
        frozen = self.training and num_updates < self.freeze_finetune_updates
        with torch.no_grad() if frozen else contextlib.nullcontext():
            x, padding_mask, _, _ = h.encode(h.conv_features(wav), padding_mask, mask, generator)
        logits = self.proj(self.final_dropout(x))
        return logits.float().log_softmax(-1), padding_mask



def frame_lengths(log_probs: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
    """Unpadded frames per utterance of a ``[batch, frames, classes]`` output."""
    if padding_mask is None:
        return torch.full((log_probs.shape[0],), log_probs.shape[1], dtype=torch.long, device=log_probs.device)
    return (~padding_mask).sum(1).long()


# -- checkpoints ----------------------------------------------------------------------------


def save_ctc(model: HubertCTC, path: str | os.PathLike) -> None:
    """A ``ctc`` checkpoint (``checkpoint.py``)."""
    cfg = {"model": model.hubert.cfg.to_dict(), "task": {"normalize": model.hubert.cfg.normalize}}  # cfg.task: for older readers
    write_checkpoint(path, "ctc", {"cfg": cfg, "symbols": model.symbols, "final_dropout": model.final_dropout.p,
                                   "model": model.state_dict()})


def load_ctc(path: str | os.PathLike) -> HubertCTC:
    """A fine-tuned model in eval mode: a hubertkit fine-tuning checkpoint (saved, or a
    training one), or a ``transformers`` ``HubertForCTC`` folder."""
    path = Path(path)
    if path.is_dir():
        return import_hf_ctc(path).eval()
    ck = require(path, ("ctc",), "transcribing")
    model = load_weights(HubertCTC(ck.hubert_config, ck.state["symbols"], ck.state["final_dropout"]), ck.state["model"], str(path))
    return model.eval()


# -- transformers ---------------------------------------------------------------------------


def export_hf_ctc(model: HubertCTC, out: str | os.PathLike) -> Path:
    """A folder that ``transformers.HubertForCTC.from_pretrained`` (and
    ``Wav2Vec2Processor``) load: weights, config, vocab and tokenizer files."""

    out = Path(out)
    head = {"lm_head.weight": model.proj.weight.detach().contiguous(), "lm_head.bias": model.proj.bias.detach().contiguous()}
    export_hf(model.hubert, out, prefix="hubert.", extra=head)
    config = hf_config(model.hubert.cfg)
    config.update({
        "architectures": ["HubertForCTC"], "vocab_size": len(model.vocab), "pad_token_id": BLANK,
        "bos_token_id": 1, "eos_token_id": 2, "final_dropout": model.final_dropout.p,
        "ctc_loss_reduction": "sum", "ctc_zero_infinity": True,
    })
    config["hubertkit"]["ctc_symbols"] = model.symbols
    write_text(out / "config.json", json.dumps(config, indent=2) + "\n")
    vocab = {s: i for i, s in enumerate(list(HF_SPECIALS) + model.symbols)}
    write_text(out / "vocab.json", json.dumps(vocab, indent=2, ensure_ascii=False) + "\n")
    write_text(out / "tokenizer_config.json", json.dumps({
        "tokenizer_class": "Wav2Vec2CTCTokenizer", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>",
        "pad_token": "<pad>", "word_delimiter_token": "|", "do_lower_case": False,
    }, indent=2) + "\n")
    return out


def import_hf_ctc(folder: Path) -> HubertCTC:
    config = read_hf_config(folder)
    if "HubertForCTC" not in (config.get("architectures") or []):
        raise HubertkitError(f"{folder} holds no HubertForCTC (architectures: {config.get('architectures')})")
    vocab_file = folder / "vocab.json"
    if not vocab_file.is_file():
        raise HubertkitError(f"{folder} has no vocab.json: the letters of the output layer are unknown")
    by_index = sorted(json.loads(vocab_file.read_text()).items(), key=lambda kv: kv[1])
    size = config.get("vocab_size")
    if [i for _, i in by_index] != list(range(len(by_index))) or len(by_index) != size:
        raise HubertkitError(f"{vocab_file} must number config.json's vocab_size ({size}) tokens 0..{len(by_index) - 1}")
    if config.get("pad_token_id", BLANK) != BLANK or len(by_index) < len(SPECIALS):
        raise HubertkitError(f"{folder}: hubertkit reads CTC models whose blank is token 0 and whose first 4 tokens are specials")
    encoder = import_hf(folder)
    model = HubertCTC(encoder.cfg, [s for s, _ in by_index[len(SPECIALS):]], config.get("final_dropout", 0.0))
    model.load_encoder(encoder)
    state = _hf_weights(folder)
    model.proj.weight.data.copy_(state["lm_head.weight"])
    model.proj.bias.data.copy_(state["lm_head.bias"])
    return model
