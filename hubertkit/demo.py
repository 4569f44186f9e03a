"""``hubertkit demo``: the recipe on the small corpus shipped in ``data/demo``.

For now this is the label-preparation half (manifest → MFCC → k-means → labels →
dictionary) followed by the label quality against the corpus's phone alignments.
"""

from __future__ import annotations

import time
from pathlib import Path

from hubertkit.errors import HubertkitError

N_CLUSTERS = 100
NSHARD = 2


def find_corpus(corpus: str | None = None) -> Path:
    candidates = [Path(corpus)] if corpus else [Path.cwd() / "data/demo", Path(__file__).resolve().parents[1] / "data/demo"]
    for c in candidates:
        if (c / "alignments.jsonl").is_file():
            return c
    raise HubertkitError(
        f"demo corpus not found (looked in {', '.join(map(str, candidates))}); "
        "run from a clone of the hubertkit repository or pass --corpus data/demo"
    )


def run_demo(out: str = "demo_out", corpus: str | None = None, jobs: int = 2, progress: bool = True) -> str:
    from hubertkit.cluster.kmeans import dump_labels, learn_kmeans
    from hubertkit.cluster.quality import label_quality
    from hubertkit.data.labels import make_dict, merge_labels
    from hubertkit.data.manifest import make_manifest
    from hubertkit.features.dump import dump_mfcc

    start = time.time()
    corpus_dir = find_corpus(corpus)
    out = Path(out)
    tsv, feats, lab = out / "manifest", out / "mfcc", out / "labels"
    km = out / f"kmeans_mfcc_{N_CLUSTERS}.pt"

    def step(text):
        print(f"[{time.time() - start:6.1f}s] {text}", flush=True)

    counts = make_manifest(corpus_dir, tsv, ext="flac", valid_percent=0.1, seed=0)
    step(f"manifest: {counts}")
    for split in ("train", "valid"):
        step(f"dump-mfcc {split}: {dump_mfcc(tsv, split, NSHARD, 'all', feats, jobs=jobs, progress=progress)}")
    step(learn_kmeans(feats, "train", NSHARD, km, N_CLUSTERS, percent=-1, seed=0, progress=progress))
    for split in ("train", "valid"):
        dump_labels(feats, split, km, NSHARD, "all", lab, progress=progress)
        merge_labels(lab, split, NSHARD)
    step(f"labels: {make_dict(lab)['path']}")
    lines = ["", f"MFCC k-means (K={N_CLUSTERS}) labels at 100 Hz against the demo corpus's phone alignments:"]
    for split in ("train", "valid"):
        q = label_quality(lab / f"{split}.km", corpus_dir / "alignments.jsonl", 100, tsv / f"{split}.tsv")
        lines.append(f"  {split:5s} {q}")
    lines.append(f"outputs in {out}/ ({time.time() - start:.0f} s)")
    return "\n".join(lines)
