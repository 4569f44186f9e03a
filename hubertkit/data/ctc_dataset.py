"""Audio with its letter transcript (``{split}.ltr``), for CTC fine-tuning.

Unlike pretraining, nothing is cropped: a transcript belongs to the whole utterance.
(fairseq's HuBERT fine-tuning crops to the batch's shortest utterance unless
``task.pad_audio=true``, cutting audio whose letters stay in the target; here batches
are always padded.)
"""

from __future__ import annotations

import os

import numpy as np
import torch

from hubertkit.data.audio import read_audio, standardize
from hubertkit.data.dataset import select_by_length
from hubertkit.data.dictionary import NUM_SPECIAL, PAD_INDEX
from hubertkit.data.labels import dict_path, label_path, read_dict
from hubertkit.data.manifest import read_manifest
from hubertkit.errors import HubertkitError


class TranscribedDataset(torch.utils.data.Dataset):
    """Item ``i``: ``{"id", "source": waveform, "target": LongTensor of letter indices}``
    (indices into fairseq's dictionary: 4 specials, then ``dict.ltr.txt``)."""

    def __init__(self, manifest: str | os.PathLike, label_dir: str | os.PathLike, split: str, label: str = "ltr",
                 sample_rate: int = 16000, min_keep_size: int | None = None, max_keep_size: int | None = None,
                 normalize: bool = False):
        self.manifest = read_manifest(manifest)
        self.split, self.sample_rate, self.normalize = split, sample_rate, normalize
        self.symbols = read_dict(dict_path(label_dir, label))
        path = label_path(label_dir, split, label)
        if not path.is_file():
            raise HubertkitError(f"transcript file {path} does not exist (run prepare-text)")
        lines = path.read_text().splitlines()
        if len(lines) != len(self.manifest):
            raise HubertkitError(f"{path} has {len(lines)} lines but {self.manifest.path} lists {len(self.manifest)} utterances")
        index = {s: i + NUM_SPECIAL for i, s in enumerate(self.symbols)}
        unknown = sorted({c for line in lines for c in line.split() if c not in index})
        if unknown:
            raise HubertkitError(f"{path} has symbols not in dict.{label}.txt: {unknown[:10]}; make the dictionary from these transcripts")
        targets = [torch.tensor([index[c] for c in line.split()], dtype=torch.long) for line in lines]
        self.index, sizes = select_by_length(self.manifest, np.ones(len(self.manifest), dtype=bool), min_keep_size, max_keep_size)
        self.sizes = sizes[self.index]
        self.targets = [targets[i] for i in self.index]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        wav = torch.from_numpy(read_audio(self.manifest.utterance(self.index[i]), self.sample_rate, str(self.manifest.path)))
        if self.normalize:
            wav = standardize(wav)
        return {"id": i, "source": wav, "target": self.targets[i]}

    @property
    def num_tokens(self) -> np.ndarray:
        return self.sizes

    def collate(self, items: list[dict], generator: np.random.Generator | None = None) -> dict:
        width = max(len(it["source"]) for it in items)
        audio = torch.zeros(len(items), width)
        padding = torch.ones(len(items), width, dtype=torch.bool)
        for j, it in enumerate(items):
            audio[j, : len(it["source"])] = it["source"]
            padding[j, : len(it["source"])] = False
        lengths = torch.tensor([len(it["target"]) for it in items])
        target = torch.full((len(items), int(lengths.max())), PAD_INDEX, dtype=torch.long)
        for j, it in enumerate(items):
            target[j, : len(it["target"])] = it["target"]
        return {"id": torch.tensor([it["id"] for it in items]), "source": audio,
                "padding_mask": padding if padding.any() else None, "target": target, "target_lengths": lengths,
                "samples": int(sum(len(it["source"]) for it in items))}
