"""Is the data loader ever the bottleneck? Audio samples per second that the training
loader delivers (FLAC decoding, random crops, label cutting, collation, in worker
processes) against what HuBERT Base consumes in forward + backward on the same batches,
on the same machine.

    python benchmarks/bench_loader.py [--workers 2] [--epochs 3]

Uses the demo corpus with its MFCC k-means labels and Base's batching
(max_tokens 1.4M samples, crops of at most 250k samples).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import header  # noqa: E402

from hubertkit.cluster.kmeans import dump_labels, learn_kmeans  # noqa: E402
from hubertkit.data.batching import batches_by_size  # noqa: E402
from hubertkit.data.dataset import HubertDataset, load_label_sets  # noqa: E402
from hubertkit.data.labels import make_dict, merge_labels  # noqa: E402
from hubertkit.data.manifest import make_manifest  # noqa: E402
from hubertkit.features.dump import dump_mfcc  # noqa: E402
from hubertkit.model import HubertModel, preset  # noqa: E402
from hubertkit.train.tasks.pretraining import hubert_loss  # noqa: E402
from hubertkit.train.trainer import BatchDataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def prepare(tmp: Path) -> None:
    make_manifest(ROOT / "hubertkit/corpora/demo", tmp, valid_percent=0)
    dump_mfcc(tmp, "train", 1, 0, tmp / "feat", jobs=2, progress=False)
    learn_kmeans(tmp / "feat", "train", 1, tmp / "km.pt", 100, progress=False)
    dump_labels(tmp / "feat", "train", tmp / "km.pt", 1, 0, tmp, progress=False)
    merge_labels(tmp, "train", 1)
    make_dict(tmp)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    prepare(tmp)
    sets = load_label_sets(tmp, ["km"], 100.0)
    data = HubertDataset(tmp / "train.tsv", tmp, "train", sets, max_sample_size=250000, min_keep_size=32000)
    sizes = data.num_tokens

    samples, start = 0, time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        batches = batches_by_size(sizes, 1_400_000, seed=1, epoch=epoch)
        loader = torch.utils.data.DataLoader(BatchDataset(data, batches, 1, epoch), batch_size=None,
                                             num_workers=args.workers, prefetch_factor=4 if args.workers else None)
        for batch in loader:
            samples += batch["source"].numel()
    loader_rate = samples / (time.perf_counter() - start)

    torch.manual_seed(0)
    model = HubertModel(preset("base", num_classes=[sets[0].num_classes], label_rate=100)).train()
    batch = BatchDataset(data, batches_by_size(sizes, 1_400_000, seed=1, epoch=1), 1, 1)[0]
    times = []
    for step in range(3):
        t = time.perf_counter()
        loss, n, _ = hubert_loss(model(batch["source"], batch["target_list"], generator=torch.Generator().manual_seed(step)))
        (loss / n).backward()
        times.append(time.perf_counter() - t)
    model_rate = batch["source"].numel() / min(times[1:])

    print(header("Data loader throughput against HuBERT Base's consumption"))
    print(f"- loader: {args.workers} worker processes, {args.epochs} epochs of the demo corpus: **{loader_rate:,.0f} samples/s** "
          f"({loader_rate / 16000:.0f}x real time)")
    print(f"- HuBERT Base forward + backward on a {tuple(batch['source'].shape)} batch: **{model_rate:,.0f} samples/s**")
    print(f"- loader / model: **{loader_rate / model_rate:.0f}x** (target >= 10)")


if __name__ == "__main__":
    main()
