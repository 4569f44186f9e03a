import json

import numpy as np
import pytest
from sklearn.metrics import mutual_info_score

from hubertkit.cluster.quality import chance_quality, joint_counts, label_quality, quality_from_counts
from hubertkit.data.alignments import frame_phones


def entropy(x):
    _, c = np.unique(x, return_counts=True)
    p = c / c.sum()
    return -(p * np.log(p)).sum()


def purity(by, of):
    """Fraction of frames whose `of` value is the most common one within their `by` group."""
    total = 0
    for g in np.unique(by):
        _, c = np.unique(of[by == g], return_counts=True)
        total += c.max()
    return total / len(by)


def test_metrics_against_sklearn_and_definitions():
    rng = np.random.default_rng(0)
    phones = rng.choice(list("abcdefg"), 5000)
    labels = (np.searchsorted(list("abcdefg"), phones) * 3 + rng.integers(0, 4, 5000)) % 17
    counts, _, _ = joint_counts([phones.tolist()], [labels.tolist()])
    q = quality_from_counts(counts)
    assert q.mutual_info == pytest.approx(mutual_info_score(phones, labels), rel=1e-9)
    assert q.pnmi == pytest.approx(mutual_info_score(phones, labels) / entropy(phones), rel=1e-9)
    assert q.phone_purity == pytest.approx(purity(labels, phones))
    assert q.cluster_purity == pytest.approx(purity(phones, labels))


def test_perfect_and_useless_labels():
    phones = list("aabbbcccc" * 50)
    perfect = quality_from_counts(joint_counts([phones], [[ord(p) for p in phones]])[0])
    assert perfect.pnmi == pytest.approx(1.0) and perfect.phone_purity == pytest.approx(1.0)
    constant = quality_from_counts(joint_counts([phones], [[0] * len(phones)])[0])
    assert constant.pnmi == pytest.approx(0.0, abs=1e-12)


def test_frame_phones_uses_frame_centres():
    phones = [("sil", 0.0, 0.1), ("a", 0.1, 0.25), ("b", 0.25, 0.3)]
    # 100 Hz: frame i centred at i/100 + 0.0125
    got = frame_phones(phones, 30, 100)
    assert got[:9] == ["sil"] * 9 and got[9] == "a" and got[23] == "a" and got[24] == "b" and got[-1] == "b"


def test_label_quality_on_demo(prepared, demo_dir, tmp_path):
    """Labels made from the alignments themselves score PNMI 1."""
    from hubertkit.data.alignments import read_alignments
    from hubertkit.data.manifest import read_manifest

    align = read_alignments(demo_dir / "alignments.jsonl")
    manifest = read_manifest(prepared / "tsv" / "valid.tsv")
    lengths = np.loadtxt(prepared / "feat" / "valid_0_1.len", dtype=int, ndmin=1)
    names = sorted({p for v in align.values() for p, _, _ in v})
    lines = []
    for utt, n in zip(manifest.utterances, lengths):
        key = utt.path[len(manifest.root) + 1 :].rsplit(".", 1)[0]
        lines.append(" ".join(str(names.index(p)) for p in frame_phones(align[key], n, 100)))
    (tmp_path / "valid.km").write_text("\n".join(lines) + "\n")
    q = label_quality(tmp_path / "valid.km", demo_dir / "alignments.jsonl", 100, prepared / "tsv" / "valid.tsv")
    assert q.pnmi == pytest.approx(1.0) and q.utterances == len(manifest)
    assert q.frames + q.frame_diff >= int(lengths.sum())
    assert json.loads(json.dumps(q.as_dict()))["pnmi"] == pytest.approx(1.0)


def test_wrong_label_rate_is_refused_with_the_right_one(labelled, demo_dir):
    """100 Hz MFCC labels scored at 50 Hz would meet the wrong phones (PNMI about halves)."""
    from hubertkit.errors import HubertkitError

    args = (labelled / "labels" / "valid.km", demo_dir / "alignments.jsonl")
    right = label_quality(*args, 100, labelled / "tsv" / "valid.tsv")
    assert right.pnmi > 0.2
    with pytest.raises(HubertkitError, match="made at 100 Hz; pass --label-rate 100"):
        label_quality(*args, 50, labelled / "tsv" / "valid.tsv")
    with pytest.raises(HubertkitError, match="made at 100 Hz; pass --label-rate 100"):
        label_quality(*args, 200, labelled / "tsv" / "valid.tsv")


def test_chance_quality_is_the_labels_shuffled(labelled, demo_dir):
    args = (labelled / "labels" / "valid.km", demo_dir / "alignments.jsonl", 100, labelled / "tsv" / "valid.tsv")
    real, chance = label_quality(*args), chance_quality(*args)
    assert chance.frames == real.frames and chance.h_label == pytest.approx(real.h_label)  # same cluster sizes
    assert 0 <= chance.pnmi < real.pnmi / 2
    assert chance.pnmi == chance_quality(*args).pnmi  # seeded
