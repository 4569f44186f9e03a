"""``hubertkit demo``: the recipe on the small corpus shipped in ``data/demo``.

Label preparation (manifest → MFCC → k-means → labels → dictionary), the label quality
against the corpus's phone alignments, then pretraining of the ``tiny`` model on those
labels with ``configs/demo.yaml`` (a few minutes on a 2-core CPU), reporting how the
loss and masked-prediction accuracy moved.
"""

from __future__ import annotations

import json
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


def run_demo(
    out: str = "demo_out", corpus: str | None = None, jobs: int = 2, progress: bool = True, max_update: int | None = None
) -> str:
    from hubertkit.cluster.kmeans import dump_labels, learn_kmeans
    from hubertkit.cluster.quality import label_quality
    from hubertkit.data.labels import make_dict, merge_labels
    from hubertkit.data.manifest import make_manifest
    from hubertkit.features.dump import dump_mfcc
    from hubertkit.plots import training_curves
    from hubertkit.train.trainer import train

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
    step("pretraining the tiny model (configs/demo.yaml)")
    overrides = [f"task.data={tsv}", f"task.label_dir={lab}", f"checkpoint.save_dir={out / 'checkpoints'}"]
    if max_update:
        overrides += [f"optimization.max_update={max_update}", f"lr_scheduler.total_num_update={max_update}"]
    result = train("demo", overrides, progress=progress)
    log_path = out / "checkpoints" / "train_log.jsonl"
    png = training_curves(log_path, out / "training.png", "tiny HuBERT on the demo corpus, MFCC k-means labels")
    lines += ["", training_summary(log_path), f"  curves: {png}"]
    lines.append(f"outputs in {out}/ ({time.time() - start:.0f} s, training {result['seconds']:.0f} s)")
    return "\n".join(lines)


def training_summary(log_path: Path) -> str:
    """First and last logged train/valid values, read back from the run's own log."""
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    out = ["Pretraining (loss in bits per masked frame; acc_m: masked-frame accuracy, acc_u: unmasked):"]
    for split in ("train", "valid"):
        rows = [r for r in records if r["split"] == split]
        if not rows:
            continue
        first, last = rows[0], rows[-1]
        out.append(
            f"  {split:5s} update {first['update']:4d}: loss {first['loss']:.3f} acc_m {first.get('acc_m_0', 0):.3f} "
            f"acc_u {first.get('acc_u_0', 0):.3f}  ->  update {last['update']:4d}: loss {last['loss']:.3f} "
            f"acc_m {last.get('acc_m_0', 0):.3f} acc_u {last.get('acc_u_0', 0):.3f}"
        )
    return "\n".join(out)
