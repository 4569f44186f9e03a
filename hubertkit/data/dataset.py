"""fairseq's ``HubertDataset``: audio from a manifest with frame labels, cropped in step,
with the recipe's traps checked before the first batch."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hubertkit.data.audio import read_audio
from hubertkit.data.labels import read_dict, read_labels, read_sidecar
from hubertkit.data.manifest import Utterance, read_manifest
from hubertkit.errors import HubertkitError

log = logging.getLogger(__name__)

# fairseq's Dictionary puts <s>, <pad>, </s>, <unk> before the symbols of dict.km.txt.
NUM_SPECIAL = 4
PAD_INDEX = 1
LENGTH_TOLERANCE_S = 0.1


@dataclass
class LabelSet:
    name: str  # the label file extension, e.g. "km"
    rate: float  # labels per second
    symbols: list[str]  # dict.{name}.txt, in order

    @property
    def num_classes(self) -> int:
        """len(fairseq Dictionary) = the symbols + the 4 specials."""
        return len(self.symbols) + NUM_SPECIAL


def load_label_sets(label_dir: str | os.PathLike, names: list[str], rate: float) -> list[LabelSet]:
    return [LabelSet(n, rate, read_dict(Path(label_dir) / f"dict.{n}.txt")) for n in names]


class HubertDataset(torch.utils.data.Dataset):
    """Item ``i``: ``{"id", "source": float waveform, "label_list": [LongTensor]}``."""

    def __init__(
        self,
        manifest: str | os.PathLike,
        label_dir: str | os.PathLike,
        split: str,
        label_sets: list[LabelSet],
        sample_rate: int = 16000,
        min_keep_size: int | None = None,
        max_keep_size: int | None = None,
        max_sample_size: int | None = None,
        pad_audio: bool = False,
        random_crop: bool = True,
        normalize: bool = False,
        skip_misaligned: bool = False,
    ):
        self.manifest = read_manifest(manifest)
        self.split, self.sample_rate = split, sample_rate
        self.label_sets = label_sets
        self.max_sample_size = max_sample_size or 2**62
        self.pad_audio, self.random_crop, self.normalize = pad_audio, random_crop, normalize
        labels = [self._load_labels(Path(label_dir) / f"{split}.{ls.name}", ls) for ls in label_sets]
        keep = self._check_lengths(labels, skip_misaligned)
        sizes = np.array([u.num_samples for u in self.manifest.utterances])
        if min_keep_size:
            keep &= sizes >= min_keep_size
        if max_keep_size:
            keep &= sizes <= max_keep_size
        self.index = np.flatnonzero(keep)
        if len(self.index) == 0:
            raise HubertkitError(
                f"no utterance of {self.manifest.path} is left after the length limits "
                f"(min_sample_size={min_keep_size}, max_keep_size={max_keep_size})"
            )
        dropped = len(keep) - len(self.index)
        if dropped:
            log.info("%s: kept %d utterances, dropped %d (length limits or misalignment)", split, len(self.index), dropped)
        self.sizes = sizes[self.index]
        self.labels = [[lab[i] for i in self.index] for lab in labels]

    # -- checks ---------------------------------------------------------------------------

    def _load_labels(self, path: Path, ls: LabelSet) -> list[torch.Tensor]:
        lines = read_labels(path) if path.is_file() else None
        if lines is None:
            raise HubertkitError(f"label file {path} does not exist (task.label_dir / task.labels)")
        if len(lines) != len(self.manifest):
            raise HubertkitError(
                f"{path} has {len(lines)} lines but {self.manifest.path} lists {len(self.manifest)} utterances: "
                "labels must be made from the same manifest"
            )
        index = {s: i + NUM_SPECIAL for i, s in enumerate(ls.symbols)}
        unknown = {v for line in lines for v in line if str(v) not in index}
        if unknown:
            raise HubertkitError(
                f"{path} has labels not in dict.{ls.name}.txt ({len(ls.symbols)} symbols), e.g. "
                f"{sorted(unknown)[:5]}: fairseq would silently map them to <unk>; regenerate the dictionary with make-dict"
            )
        if not all(s.isdigit() for s in ls.symbols):
            raise HubertkitError(f"dict.{ls.name}.txt must list integer labels (k-means cluster ids)")
        table = np.zeros(max(int(s) for s in ls.symbols) + 1, np.int64)
        for s, i in index.items():
            table[int(s)] = i
        return [torch.from_numpy(table[np.asarray(line, dtype=np.int64)]) for line in lines]

    def _check_lengths(self, labels: list[list[torch.Tensor]], skip: bool) -> np.ndarray:
        """fairseq's 0.1 s tolerance between audio and label durations; a systematic 2×
        (or 0.5×) ratio means the label rate is wrong."""
        keep = np.ones(len(self.manifest), dtype=bool)
        for lab, ls in zip(labels, self.label_sets):
            audio_s = np.array([u.num_samples / self.sample_rate for u in self.manifest.utterances])
            label_s = np.array([len(t) / ls.rate for t in lab])
            ratio = np.median(label_s / np.maximum(audio_s, 1e-9))
            for factor, actual in ((2.0, ls.rate * 2), (0.5, ls.rate / 2)):
                if abs(ratio - factor) < 0.1 * factor:
                    raise HubertkitError(
                        f"labels {self.split}.{ls.name} are {factor:g}x longer than the audio at label_rate={ls.rate:g}: "
                        f"they were made at {actual:g} Hz; set model.label_rate={actual:g}"
                    )
            bad = np.flatnonzero(np.abs(audio_s - label_s) > LENGTH_TOLERANCE_S)
            if len(bad) and not skip:
                names = ", ".join(f"{self.manifest.utterances[i].path} (audio {audio_s[i]:.2f} s, labels {label_s[i]:.2f} s)" for i in bad[:5])
                raise HubertkitError(
                    f"{len(bad)} utterance(s) of {self.split} have audio and {ls.name} labels differing by more than "
                    f"{LENGTH_TOLERANCE_S} s: {names}. Regenerate the labels, or set task.skip_misaligned=true to drop them"
                )
            keep[bad] = False
        return keep

    # -- items and batches -----------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.index)

    def utterance(self, i: int) -> Utterance:
        return self.manifest.utterances[self.index[i]]

    def __getitem__(self, i: int) -> dict:
        wav = torch.from_numpy(read_audio(self.utterance(i), self.sample_rate, str(self.manifest.path)))
        if self.normalize:
            wav = F.layer_norm(wav, wav.shape)
        return {"id": i, "source": wav, "label_list": [lab[i] for lab in self.labels]}

    @property
    def num_tokens(self) -> np.ndarray:
        """Each item's batch cost in samples: audio is cropped to max_sample_size."""
        return np.minimum(self.sizes, self.max_sample_size)

    def collate(self, items: list[dict], generator: np.random.Generator | None = None) -> dict:
        """Crop every waveform to the batch's shortest (or pad to its longest with
        ``pad_audio``), at most ``max_sample_size``, at a random offset with labels cut
        in step; fairseq's ``collater``."""
        sizes = [len(it["source"]) for it in items]
        target = min(max(sizes), self.max_sample_size) if self.pad_audio else min(min(sizes), self.max_sample_size)
        rng = generator or np.random.default_rng()
        audio = torch.zeros(len(items), target)
        padding = torch.zeros(len(items), target, dtype=torch.bool)
        starts = []
        for j, it in enumerate(items):
            wav = it["source"]
            excess = len(wav) - target
            start = int(rng.integers(0, excess + 1)) if excess > 0 and self.random_crop else 0
            starts.append(start)
            chunk = wav[start : start + target]
            audio[j, : len(chunk)] = chunk
            padding[j, len(chunk) :] = True
        targets = []
        for k, ls in enumerate(self.label_sets):
            s2f = ls.rate / self.sample_rate
            frame_starts = [int(round(s * s2f)) for s in starts]
            size = int(round(target * s2f))
            if not self.pad_audio:
                size = min(size, *(len(it["label_list"][k]) - s for it, s in zip(items, frame_starts)))
            cut = [it["label_list"][k][s : s + size] for it, s in zip(items, frame_starts)]
            width = max(len(c) for c in cut)
            targets.append(torch.stack([F.pad(c, (0, width - len(c)), value=PAD_INDEX) for c in cut]))
        return {
            "id": torch.tensor([it["id"] for it in items]),
            "source": audio,
            "padding_mask": padding if padding.any() else None,
            "target_list": targets,
            "samples": sum(min(s, target) for s in sizes),
        }


def check_same_kmeans(label_dir: str | os.PathLike, splits: list[str], names: list[str]) -> None:
    """Valid labels must come from the train k-means (their sidecars record it)."""
    for name in names:
        made_by = {s: (read_sidecar(Path(label_dir) / f"{s}.{name}") or {}).get("kmeans") for s in splits}
        known = {s: k for s, k in made_by.items() if k}
        if len(set(known.values())) > 1:
            detail = ", ".join(f"{s}.{name} by k-means {k}" for s, k in known.items())
            raise HubertkitError(
                f"{detail}: every split must be labelled with the k-means fitted on train "
                f"(run dump-labels for the other splits with train's KM_PATH)"
            )
