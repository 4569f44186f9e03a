"""One token vocabulary for unit-based ASR: fairseq's four specials, the letters of
``dict.ltr.txt`` (so letter ids are those of CTC fine-tuning), then one token per unit.

BART shares its embeddings between encoder and decoder, hence one vocabulary for
source units and target letters. As text, units are written ``u0 u17 u3`` and letters in
fairseq's ``.ltr`` form (``H I | T H E R E |``); the Hugging Face tokenizer built here
reads both and decodes letters back to words, so a saved model needs no hubertkit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hubertkit.data.dictionary import SPECIALS
from hubertkit.data.text import WORD_BOUNDARY, letters
from hubertkit.errors import HubertkitError
from hubertkit.optional import require_transformers

BOS, PAD, EOS, UNK = range(len(SPECIALS))  # fairseq's <s> <pad> </s> <unk>


@dataclass(frozen=True)
class UnitVocab:
    symbols: tuple[str, ...]  # letters, in dict.ltr.txt order
    num_units: int

    @property
    def first_unit(self) -> int:
        return len(SPECIALS) + len(self.symbols)

    @property
    def size(self) -> int:
        return self.first_unit + self.num_units

    @property
    def letter_ids(self) -> dict[str, int]:
        return {s: i + len(SPECIALS) for i, s in enumerate(self.symbols)}

    def tokens(self) -> list[str]:
        return [*SPECIALS, *self.symbols, *(f"u{u}" for u in range(self.num_units))]

    def encode_units(self, units: list[int], where: str) -> list[int]:
        bad = [u for u in units if not 0 <= u < self.num_units]
        if bad:
            raise HubertkitError(f"{where}: unit id {bad[0]} is outside this model's vocabulary of {self.num_units} units "
                                 "(units from another k-means model?)")
        return [self.first_unit + u for u in units]

    def encode_text(self, words: str, where: str) -> list[int]:
        ids = self.letter_ids
        out = []
        for c in letters(words).split():
            if c not in ids:
                raise HubertkitError(f"{where}: letter {c!r} is not in the model's letters {''.join(self.symbols)}")
            out.append(ids[c])
        return out

    def letters_of(self, ids: list[int]) -> list[str]:
        """The letter symbols among ``ids`` (specials and units dropped)."""
        return [self.symbols[i - len(SPECIALS)] for i in ids if len(SPECIALS) <= i < self.first_unit]

    def decode_letters(self, ids: list[int]) -> str:
        return " ".join("".join(self.letters_of(ids)).replace(WORD_BOUNDARY, " ").split())


def dedup(units: list[int]) -> tuple[list[int], list[int]]:
    """Runs of repeated units collapsed: the units and each run's length."""
    out, durations = [], []
    for u in units:
        if out and out[-1] == u:
            durations[-1] += 1
        else:
            out.append(u)
            durations.append(1)
    return out, durations


def units_text(units: list[int]) -> str:
    """Units as the tokenizer reads them."""
    return " ".join(f"u{u}" for u in units)


def hf_tokenizer(vocab: UnitVocab):
    """A ``PreTrainedTokenizerFast``: whitespace-separated tokens, ``</s>`` appended,
    and letters decoded to words (``|`` → space), exactly as ``decode_letters``."""
    PreTrainedTokenizerFast, = require_transformers("PreTrainedTokenizerFast")
    from tokenizers import (  # transformers' dependency
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
    )

    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(vocab.tokens())}, unk_token=SPECIALS[UNK]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", EOS)])
    b = re.escape(WORD_BOUNDARY)  # boundaries at the ends dropped, a run inside is one space: as decode_letters
    tok.decoder = decoders.Sequence([decoders.Fuse(), decoders.Replace(Regex(f"^{b}+|{b}+$"), ""),
                                     decoders.Replace(Regex(f"{b}+"), " ")])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIALS[BOS], pad_token=SPECIALS[PAD],
                                   eos_token=SPECIALS[EOS], unk_token=SPECIALS[UNK], clean_up_tokenization_spaces=False)
