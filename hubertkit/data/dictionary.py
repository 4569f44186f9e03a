"""fairseq's ``Dictionary``: four special symbols, then the symbols of a ``dict.*.txt``.

Label ``s`` of ``dict.km.txt`` is class ``NUM_SPECIAL + its line``, in training, in
checkpoints and in fairseq. fairseq's own checkpoints also pickle their ``Dictionary``
objects (``task_state``); :class:`FairseqDictionary` holds the same fields so that an
exported checkpoint carries them under fairseq's class name, and so that such a
checkpoint reads back without unpickling anything but plain data.
"""

from __future__ import annotations

import pickle
import types

import torch

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # fairseq's bos, pad, eos, unk; <s> is also the CTC blank
NUM_SPECIAL = len(SPECIALS)
PAD_INDEX = 1
FAIRSEQ_NAME = "fairseq.data.dictionary.Dictionary"


class FairseqDictionary:
    """The fields of a fairseq ``Dictionary``, nothing else (no methods that run on load)."""

    def __init__(self, symbols: list[str], counts: list[int] | None = None):
        self.bos_word, self.pad_word, self.eos_word, self.unk_word = SPECIALS
        self.symbols = [*SPECIALS, *symbols]
        self.count = [1] * NUM_SPECIAL + list(counts or [1] * len(symbols))
        self.indices = {s: i for i, s in enumerate(self.symbols)}
        self.bos_index, self.pad_index, self.eos_index, self.unk_index = range(NUM_SPECIAL)
        self.nspecial = NUM_SPECIAL

    def __len__(self) -> int:
        return len(self.symbols)


class _Pickler(pickle._Pickler):
    """Writes :class:`FairseqDictionary` as fairseq's class, which fairseq then rebuilds."""

    def save_global(self, obj, name=None):
        if obj is FairseqDictionary:
            module, _, cls = FAIRSEQ_NAME.rpartition(".")
            self.write(pickle.GLOBAL + f"{module}\n{cls}\n".encode())
            self.memoize(obj)
        else:
            super().save_global(obj, name)


# for torch.save(..., pickle_module=FAIRSEQ_PICKLE)
FAIRSEQ_PICKLE = types.SimpleNamespace(__name__="hubertkit_fairseq_pickle", Pickler=_Pickler, dump=pickle.dump,
                                       Unpickler=pickle.Unpickler, load=pickle.load)


def reading_fairseq_dictionaries():
    """A context in which ``torch.load(weights_only=True)`` reads fairseq ``Dictionary``
    objects as :class:`FairseqDictionary` (their fields only)."""

    return torch.serialization.safe_globals([(FairseqDictionary, FAIRSEQ_NAME)])
