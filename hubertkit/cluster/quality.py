"""How well labels match phones: the HuBERT paper's phone purity, cluster purity and
PNMI, computed frame by frame as fairseq's ``measure_teacher_quality.py`` does."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np

from hubertkit.data.alignments import frame_phones, read_alignments
from hubertkit.data.audio import SAMPLE_RATE
from hubertkit.data.labels import made_at_rate, read_labels
from hubertkit.data.manifest import read_manifest
from hubertkit.errors import HubertkitError


@dataclass
class LabelQuality:
    phone_purity: float  # E over clusters of max_phone p(phone | cluster): fairseq's "ref pur"
    cluster_purity: float  # E over phones of max_cluster p(cluster | phone): "hyp pur"
    pnmi: float  # I(phone; label) / H(phone): "MI/H(ref)"
    h_phone: float
    h_label: float
    mutual_info: float
    frames: int
    utterances: int
    frame_diff: int  # Σ |label frames − alignment frames|, as fairseq's "frm diff"

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"phone purity {self.phone_purity:.4f}  cluster purity {self.cluster_purity:.4f}  "
            f"PNMI {self.pnmi:.4f}  ({self.frames} frames, {self.utterances} utterances)"
        )


def joint_counts(pairs_phones: list[list[str]], pairs_labels: list[list[int]]) -> tuple[np.ndarray, list[str], list[int]]:
    """Phone × label co-occurrence counts over frames, with row and column names."""
    phones = np.concatenate([np.asarray(p, dtype=object) for p in pairs_phones]) if pairs_phones else np.zeros(0, object)
    labels = np.concatenate([np.asarray(l, dtype=np.int64) for l in pairs_labels]) if pairs_labels else np.zeros(0, np.int64)
    phone_names, phone_idx = np.unique(phones.astype(str), return_inverse=True)
    label_names, label_idx = np.unique(labels, return_inverse=True)
    counts = np.zeros((len(phone_names), len(label_names)), dtype=np.int64)
    np.add.at(counts, (phone_idx, label_idx), 1)
    return counts, phone_names.tolist(), label_names.tolist()


def quality_from_counts(counts: np.ndarray, utterances: int = 0, frame_diff: int = 0) -> LabelQuality:
    total = counts.sum()
    if total == 0:
        raise HubertkitError("no frames to score: do the labels and alignments cover the same utterances?")
    p = counts / total
    p_phone, p_label = p.sum(1), p.sum(0)
    nz = p > 0
    mi = float((p[nz] * np.log(p[nz] / np.outer(p_phone, p_label)[nz])).sum())
    h_phone = float(-(p_phone[p_phone > 0] * np.log(p_phone[p_phone > 0])).sum())
    h_label = float(-(p_label[p_label > 0] * np.log(p_label[p_label > 0])).sum())
    return LabelQuality(
        phone_purity=float(p.max(0).sum()),
        cluster_purity=float(p.max(1).sum()),
        pnmi=mi / h_phone if h_phone > 0 else 0.0,
        h_phone=h_phone,
        h_label=h_label,
        mutual_info=mi,
        frames=int(total),
        utterances=utterances,
        frame_diff=frame_diff,
    )


def paired_frames(lab_file, alignments, tsv, label_rate: float):
    """Per utterance, the frame labels and the phones at the same frames (cut to the shorter)."""
    if not label_rate > 0:
        raise HubertkitError(f"--label-rate must be a positive number of labels per second (100 for MFCC, 50 for "
                             f"HuBERT layers), got {label_rate}")
    labels = read_labels(lab_file)
    manifest = read_manifest(tsv)
    if len(labels) != len(manifest):
        raise HubertkitError(f"{lab_file} has {len(labels)} lines but {tsv} lists {len(manifest)} utterances")
    seconds = [u.num_samples / SAMPLE_RATE for u in manifest.utterances]
    actual = made_at_rate([len(l) for l in labels], seconds, label_rate)
    if actual:  # scored at the wrong rate, every label would meet the wrong phone
        raise HubertkitError(f"{lab_file}'s labels are {actual / label_rate:g}x as many as the audio has frames at "
                             f"{label_rate:g} Hz: they were made at {actual:g} Hz; pass --label-rate {actual:g}")
    align = read_alignments(alignments)
    phones_out, labels_out, diff = [], [], 0
    for utt, labs in zip(manifest.utterances, labels):
        key = utt.key
        if key not in align:
            continue
        duration = align[key][-1][2]
        n_ref = int(round(duration * label_rate))
        diff += abs(n_ref - len(labs))
        n = min(n_ref, len(labs))
        phones_out.append(frame_phones(align[key], n, label_rate))
        labels_out.append(labs[:n])
    if not phones_out:
        raise HubertkitError(f"no utterance of {tsv} has an alignment in {alignments}")
    return phones_out, labels_out, diff


def label_quality(lab_file, alignments, label_rate: float, tsv: str | os.PathLike) -> LabelQuality:
    """Score a ``.km`` file against phone alignments; ``tsv`` is the manifest whose
    lines the label file follows (it names the utterances)."""
    phones, labels, diff = paired_frames(lab_file, alignments, tsv, label_rate)
    counts, _, _ = joint_counts(phones, labels)
    return quality_from_counts(counts, len(phones), diff)


def chance_quality(lab_file, alignments, label_rate: float, tsv: str | os.PathLike, seed: int = 0) -> LabelQuality:
    """The scores of the same labels shuffled across frames: what labels with these
    cluster sizes but no relation to the phones get on this many frames (PNMI's chance
    level is not 0 on a finite sample)."""
    return shuffled_quality(*paired_frames(lab_file, alignments, tsv, label_rate), seed=seed)


def shuffled_quality(phones: list[list[str]], labels: list[list[int]], diff: int = 0, seed: int = 0) -> LabelQuality:
    """``chance_quality`` of frames already paired by ``paired_frames``."""
    flat = np.random.default_rng(seed).permutation(np.concatenate([np.asarray(l, dtype=np.int64) for l in labels]))
    counts, _, _ = joint_counts(phones, [flat])
    return quality_from_counts(counts, len(phones), diff)
