"""fairseq's ``HubertDataset``: audio from a manifest with frame labels, cropped in step,
with the recipe's traps checked before the first batch."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hubertkit.data.audio import read_audio, standardize
from hubertkit.data.dictionary import NUM_SPECIAL, PAD_INDEX
from hubertkit.data.label_store import open_store
from hubertkit.data.labels import dict_path, label_path, made_at_rate, read_dict, read_sidecar
from hubertkit.data.manifest import Utterance, read_manifest
from hubertkit.data.shards import UtteranceShards, read_utterances
from hubertkit.data.speakers import read_speakers
from hubertkit.errors import HubertkitError

log = logging.getLogger(__name__)

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


def select_by_length(manifest, keep: np.ndarray, min_keep_size: int | None, max_keep_size: int | None):
    """Indices of the utterances ``keep`` allows within the length limits (fairseq's
    min/max_keep_size), and every utterance's size in samples."""
    sizes = manifest.sizes
    if min_keep_size:
        keep = keep & (sizes >= min_keep_size)
    if max_keep_size:
        keep = keep & (sizes <= max_keep_size)
    index = np.flatnonzero(keep)
    if len(index) == 0:
        raise HubertkitError(
            f"no utterance of {manifest.path} is left after the length limits "
            f"(min_sample_size={min_keep_size}, max_keep_size={max_keep_size})"
        )
    return index, sizes


def load_label_sets(label_dir: str | os.PathLike, names: list[str], rate: float) -> list[LabelSet]:
    return [LabelSet(n, rate, read_dict(dict_path(label_dir, n))) for n in names]


class FrameLabels:
    """One label set of a split: its label store, with label ids mapped to the model's
    classes (dictionary line + fairseq's 4 specials); the traps checked once, on the
    store's list of distinct ids rather than on every label."""

    def __init__(self, path: Path, ls: LabelSet, manifest):
        if not path.is_file():
            raise HubertkitError(f"label file {path} does not exist (task.label_dir / task.labels)")
        self.store = open_store(path, progress=True)
        if len(self.store) != len(manifest):
            raise HubertkitError(
                f"{path} has {len(self.store)} lines but {manifest.path} lists {len(manifest)} utterances: "
                "labels must be made from the same manifest"
            )
        known = set(ls.symbols)
        unknown = [v for v in self.store.ids.tolist() if str(v) not in known]
        if unknown:
            raise HubertkitError(
                f"{path} has labels not in dict.{ls.name}.txt ({len(ls.symbols)} symbols), e.g. "
                f"{unknown[:5]}: fairseq would silently map them to <unk>; regenerate the dictionary with make-dict"
            )
        if not all(s.isdigit() for s in ls.symbols):
            raise HubertkitError(f"dict.{ls.name}.txt must list integer labels (k-means cluster ids)")
        # label id → class by binary search over the dictionary's ids (a dense table would
        # take memory in proportion to the largest id, whatever the dictionary holds)
        ids = np.array([int(s) for s in ls.symbols], dtype=np.int64)
        order = np.argsort(ids)
        self.sorted_ids, self.classes = ids[order], (order + NUM_SPECIAL).astype(np.int64)

    def __getitem__(self, j: int) -> torch.Tensor:
        return torch.from_numpy(self.classes[np.searchsorted(self.sorted_ids, self.store[j])])


class HubertDataset(torch.utils.data.Dataset):
    """Item ``i``: ``{"id", "source": float waveform, "label_list": [LongTensor]}``; with
    ``feat_dir`` (the disentangling variant) also ``"pitch"`` (``[frames, 2]``: F0 in Hz
    and voicing, at ``pitch_rate``) and ``"speaker"`` (an index into ``dict.spk.txt``).

    Nothing per utterance is a Python object: the manifest, labels and pitch are arrays
    or memory maps (``FrameLabels``), so building it for LibriSpeech's 281k utterances
    takes under a second (benchmarks/bench_scale.py), and DataLoader workers share
    rather than copy it."""

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
        feat_dir: str | os.PathLike | None = None,
        pitch_rate: float = 50.0,
    ):
        self.manifest = read_manifest(manifest)
        self.split, self.sample_rate = split, sample_rate
        self.label_sets = label_sets
        self.max_sample_size = max_sample_size or 2**62
        self.pad_audio, self.random_crop, self.normalize = pad_audio, random_crop, normalize
        self.labels = [FrameLabels(label_path(label_dir, split, ls.name), ls, self.manifest) for ls in label_sets]
        timed = [(f"{split}.{ls.name} labels", lab.store.lengths, ls.rate) for lab, ls in zip(self.labels, label_sets)]
        self.pitch, self.speakers = None, None
        if feat_dir is not None:
            self.pitch = self._load_pitch(feat_dir)
            self.speakers, self.speaker_names = read_speakers(feat_dir, split, len(self.manifest))
            timed.append((f"pitch in {feat_dir}", self.pitch.lengths, pitch_rate))
        keep = self._check_lengths(timed, skip_misaligned)
        index, _ = select_by_length(self.manifest, keep, min_keep_size, max_keep_size)
        self.index = index.astype(np.int32 if len(keep) < 2**31 else np.int64)  # 4 bytes an utterance at 60k h
        dropped = len(keep) - len(self.index)
        if dropped:
            log.info("%s: kept %d utterances, dropped %d (length limits or misalignment)", split, len(self.index), dropped)
        self.pitch_rate = pitch_rate

    # -- checks ---------------------------------------------------------------------------

    def _load_pitch(self, feat_dir) -> UtteranceShards:
        pitch = read_utterances(feat_dir, self.split)
        if len(pitch) != len(self.manifest):
            raise HubertkitError(
                f"the pitch dump of {self.split} in {feat_dir} has {len(pitch)} utterances but {self.manifest.path} "
                f"lists {len(self.manifest)}: dump it from the same manifest"
            )
        if pitch.dim != 2:
            raise HubertkitError(f"{feat_dir}: {self.split} features have {pitch.dim} columns, not pitch's 2 (F0, voicing)")
        return pitch

    def _check_lengths(self, timed: list[tuple[str, np.ndarray, float]], skip: bool) -> np.ndarray:
        """fairseq's 0.1 s tolerance between audio and label (or pitch) durations; a
        systematic 2× (or 0.5×) ratio means the rate is wrong."""
        keep = np.ones(len(self.manifest), dtype=bool)
        audio_s = self.manifest.sizes / self.sample_rate
        for what, lengths, rate in timed:
            seq_s = lengths / rate
            actual = made_at_rate(lengths, audio_s, rate)
            if actual:
                raise HubertkitError(
                    f"{what} are {actual / rate:g}x longer than the audio at {rate:g} Hz: they were made at {actual:g} Hz; "
                    + (f"set model.label_rate={actual:g}" if "labels" in what else f"dump the pitch with --rate {rate:g}")
                )
            bad = np.flatnonzero(np.abs(audio_s - seq_s) > LENGTH_TOLERANCE_S)
            if len(bad) and not skip:
                names = ", ".join(f"{self.manifest.utterance(i).path} (audio {audio_s[i]:.2f} s, {seq_s[i]:.2f} s)"
                                  for i in bad[:5])
                raise HubertkitError(
                    f"{len(bad)} utterance(s) of {self.split} have audio and {what} differing by more than "
                    f"{LENGTH_TOLERANCE_S} s: {names}. Regenerate them, or set task.skip_misaligned=true to drop them"
                )
            keep[bad] = False
        return keep

    # -- items and batches -----------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.index)

    def utterance(self, i: int) -> Utterance:
        return self.manifest.utterance(self.index[i])

    def __getitem__(self, i: int) -> dict:
        j = self.index[i]
        wav = torch.from_numpy(read_audio(self.manifest.utterance(j), self.sample_rate, str(self.manifest.path)))
        if self.normalize:
            wav = standardize(wav)
        item = {"id": i, "source": wav, "label_list": [lab[j] for lab in self.labels]}
        if self.pitch is not None:
            item["pitch"] = torch.from_numpy(np.array(self.pitch[j], dtype=np.float32))
            item["speaker"] = int(self.speakers[j])
        return item

    @property
    def sizes(self) -> np.ndarray:
        """Each item's audio samples."""
        return self.manifest.sizes[self.index]

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
        targets = [
            self._crop_frames([it["label_list"][k] for it in items], starts, target, ls.rate, PAD_INDEX)
            for k, ls in enumerate(self.label_sets)
        ]
        batch = {
            "id": torch.tensor([it["id"] for it in items]),
            "source": audio,
            "padding_mask": padding if padding.any() else None,
            "target_list": targets,
            "samples": sum(min(s, target) for s in sizes),
        }
        if self.pitch is not None:  # padded frames: F0 0, voicing -1 (ignored by the loss)
            batch["pitch"] = self._crop_frames([it["pitch"] for it in items], starts, target, self.pitch_rate,
                                               torch.tensor([0.0, -1.0]))
            batch["speaker"] = torch.tensor([it["speaker"] for it in items])
        return batch

    def _crop_frames(self, seqs: list[torch.Tensor], starts: list[int], target: int, rate: float, pad) -> torch.Tensor:
        """Frame sequences cut at the audio crops' offsets, padded to one length."""
        s2f = rate / self.sample_rate
        frame_starts = [int(round(s * s2f)) for s in starts]
        size = int(round(target * s2f))
        if not self.pad_audio:
            size = min(size, *(len(q) - s for q, s in zip(seqs, frame_starts)))
        cut = [q[s : s + size] for q, s in zip(seqs, frame_starts)]
        width = max(len(c) for c in cut)
        out = torch.empty((len(cut), width, *cut[0].shape[1:]), dtype=cut[0].dtype)
        out[:] = pad
        for j, c in enumerate(cut):
            out[j, : len(c)] = c
        return out


def check_same_kmeans(label_dir: str | os.PathLike, splits: list[str], names: list[str]) -> None:
    """Valid labels must come from the train k-means (their sidecars record it)."""
    for name in names:
        made_by = {s: (read_sidecar(label_path(label_dir, s, name)) or {}).get("kmeans") for s in splits}
        known = {s: k for s, k in made_by.items() if k}
        if len(set(known.values())) > 1:
            detail = ", ".join(f"{s}.{name} by k-means {k}" for s, k in known.items())
            raise HubertkitError(
                f"{detail}: every split must be labelled with the k-means fitted on train "
                f"(run dump-labels for the other splits with train's KM_PATH)"
            )
