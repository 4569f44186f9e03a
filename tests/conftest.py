"""Shared fixtures: everything runs on the espeak-ng corpus in tests/data/espeak."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parent / "data" / "espeak"  # exact alignments; the package demo is real speech


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    assert (DEMO / "alignments.jsonl").is_file(), "demo corpus missing"
    return DEMO


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory, demo_dir) -> Path:
    """24 demo utterances (3 per speaker) copied to a scratch directory."""
    root = tmp_path_factory.mktemp("corpus")
    for speaker in sorted(p for p in demo_dir.iterdir() if p.is_dir()):
        for f in sorted(speaker.glob("*.flac"))[:3]:
            (root / speaker.name).mkdir(exist_ok=True)
            shutil.copy(f, root / speaker.name / f.name)
    return root


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, small_corpus):
    """Manifest and MFCC shards (2 shards of train, 1 of valid) of the small corpus."""
    from hubertkit.data.manifest import make_manifest
    from hubertkit.features.dump import dump_mfcc

    out = tmp_path_factory.mktemp("prepared")
    make_manifest(small_corpus, out / "tsv", valid_percent=0.25, seed=1)
    dump_mfcc(out / "tsv", "train", 2, "all", out / "feat", progress=False)
    dump_mfcc(out / "tsv", "valid", 1, 0, out / "feat", progress=False)
    return out


@pytest.fixture(scope="session")
def labelled(prepared):
    """MFCC k-means (K=20) labels of the small corpus, merged, with dict.km.txt."""
    from hubertkit.cluster.kmeans import dump_labels, learn_kmeans
    from hubertkit.data.labels import make_dict, merge_labels

    lab = prepared / "labels"
    learn_kmeans(prepared / "feat", "train", 2, prepared / "km20.pt", 20, progress=False)
    for split, nshard in (("train", 2), ("valid", 1)):
        dump_labels(prepared / "feat", split, prepared / "km20.pt", nshard, "all", lab, progress=False)
        merge_labels(lab, split, nshard)
    make_dict(lab)
    return prepared


@pytest.fixture(scope="session")
def pitched(labelled):
    """The labelled small corpus plus ``feat_dir``: 50 Hz pitch shards and speaker files."""
    from hubertkit.data.speakers import write_speakers
    from hubertkit.features.pitch import dump_pitch

    for split in ("train", "valid"):
        dump_pitch(labelled / "tsv", split, 1, 0, labelled / "pitch", progress=False)
    write_speakers(labelled / "tsv", ["train", "valid"], labelled / "pitch")
    return labelled


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of 64 KiB: ``.path``, and ``.remount(size)`` to grow it; skipped where
    mounting is not allowed (not root, or a container without the capability)."""
    import subprocess
    import types

    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root): disk-full behaviour untested")

    def remount(size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(disk)], check=True)

    try:
        yield types.SimpleNamespace(path=disk, remount=remount)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
