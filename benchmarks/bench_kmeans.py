"""learn-kmeans and dump-labels against scikit-learn (fairseq's settings) and against
the bare-matmul limit.

    python benchmarks/bench_kmeans.py mfcc   # real MFCC features, k=100, >= 1M frames
    python benchmarks/bench_kmeans.py d768   # 768-dim features, k=500, >= 200k frames

``mfcc``: MFCC+Δ+ΔΔ of the demo corpus under 18 perturbations (speed 0.9-1.1, gain,
additive noise at 15-40 dB SNR), 1.06M frames. ``d768``: the iteration-2 setting. No
HuBERT model is trained here yet, so the 768-dim frames are the MFCC frames of the demo
corpus with ±2 frames of context (195 dims) through a fixed random 2-layer tanh network
to 768 dims, plus noise: clustered, correlated features of HuBERT's width.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import header  # noqa: E402

from hubertkit.cluster.kmeans import (  # noqa: E402
    CHUNK_FRAMES,
    dump_labels,
    learn_kmeans,
    load_kmeans,
    sample_frames,
)
from hubertkit.data.shards import ShardWriter, read_shard  # noqa: E402
from hubertkit.features.mfcc import mfcc_with_deltas  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def demo_waves():
    return [sf.read(f, dtype="float32")[0] for f in sorted((ROOT / "hubertkit/corpora/demo").glob("*/*.flac"))]


def perturbed_mfcc(copies: int, seed: int = 0):
    from scipy.signal import resample_poly

    rng = np.random.default_rng(seed)
    waves = demo_waves()
    for c in range(copies):
        for wav in waves:
            speed = rng.choice([90, 95, 100, 105, 110])
            x = resample_poly(wav, 100, speed) if speed != 100 else wav
            x = x * rng.uniform(0.3, 1.0)
            snr = rng.uniform(15, 40)
            x = x + rng.standard_normal(len(x)) * np.sqrt((x**2).mean() / 10 ** (snr / 10))
            yield mfcc_with_deltas(torch.from_numpy(x.astype(np.float32))).numpy()


def projected_768(copies: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(195, 1024, generator=g) / 195**0.5
    w2 = torch.randn(1024, 768, generator=g) / 1024**0.5
    for feats in perturbed_mfcc(copies, seed):
        x = torch.from_numpy(feats)
        x = (x - x.mean(0)) / (x.std(0) + 1e-5)
        padded = torch.cat([x[:1], x[:1], x, x[-1:], x[-1:]])
        ctx = torch.cat([padded[k : k + len(x)] for k in range(5)], dim=1)
        y = torch.tanh(torch.tanh(ctx @ w1) @ w2) + 0.05 * torch.randn(len(x), 768, generator=g)
        yield y.numpy()


def write_set(feat_dir: Path, utterances, dim: int) -> int:
    with ShardWriter(feat_dir, "train", 0, 1, dim) as w:
        for feats in utterances:
            w.append(feats)
    return w.frames


def sklearn_fairseq(feats: np.ndarray, k: int):
    from sklearn.cluster import MiniBatchKMeans

    np.random.seed(0)
    km = MiniBatchKMeans(
        n_clusters=k, init="k-means++", max_iter=100, batch_size=10000, tol=0.0, max_no_improvement=100,
        n_init=20, reassignment_ratio=0.0, compute_labels=False, init_size=None,
    )
    km.fit(feats)
    return km


def bare_assign(shard, centroids: np.ndarray) -> float:
    """The limit for dump-labels: one matmul + argmin per chunk over the memory map."""
    c = torch.from_numpy(centroids)
    cn = (c * c).sum(1)
    start = time.perf_counter()
    for a in range(0, shard.feats.shape[0], CHUNK_FRAMES):
        x = torch.from_numpy(shard.read_rows(a, min(a + CHUNK_FRAMES, shard.feats.shape[0])))
        torch.addmm(cn, x, c.T, alpha=-2.0).numpy().argmin(1)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("setting", choices=["mfcc", "d768"])
    parser.add_argument("--copies", type=int, default=None, help="perturbed copies of the demo corpus")
    args = parser.parse_args()
    k, copies, make, dim = {"mfcc": (100, 18, perturbed_mfcc, 39), "d768": (500, 4, projected_768, 768)}[args.setting]
    copies = args.copies or copies
    tmp = Path(tempfile.mkdtemp())
    frames = write_set(tmp, make(copies), dim)
    feats = sample_frames(tmp, "train", 1, -1, np.random.RandomState(0)).load()
    print(f"{frames} frames of dim {dim}", file=sys.stderr)

    start = time.perf_counter()
    ref = sklearn_fairseq(feats, k)
    t_ref = time.perf_counter() - start
    ref_inertia = -ref.score(feats) / len(feats)

    summary = learn_kmeans(tmp, "train", 1, tmp / "km.pt", k, progress=False)
    ours = load_kmeans(tmp / "km.pt")

    shard = read_shard(tmp, "train", 0, 1)
    t_bare = min(bare_assign(shard, ours.centroids) for _ in range(3))
    t_labels = min(dump_labels(tmp, "train", tmp / "km.pt", 1, 0, tmp / "lab", progress=False)["seconds"] for _ in range(3))
    ref.cluster_centers_ = ours.centroids.astype(ref.cluster_centers_.dtype)
    start = time.perf_counter()
    ref.predict(feats)
    t_predict = time.perf_counter() - start

    print(header(f"k-means, {args.setting}: {frames} frames x {dim} dims, k={k}"))
    print("| | time (s) | inertia per frame |\n|---|---:|---:|")
    print(f"| scikit-learn MiniBatchKMeans, fairseq settings | {t_ref:.1f} | {ref_inertia:.4f} |")
    print(f"| hubertkit learn-kmeans (lloyd, {ours.meta['passes']} full passes) | {summary.seconds:.1f} | {summary.inertia:.4f} |")
    print(f"\n- learn-kmeans speed-up: **{t_ref / summary.seconds:.1f}x**; inertia ratio hubertkit / sklearn: **{summary.inertia / ref_inertia:.4f}** (target <= 1.005)")
    print("\n| labelling all frames | time (s) | frames / s |\n|---|---:|---:|")
    for name, t in (("bare matmul + argmin (limit)", t_bare), ("hubertkit dump-labels (writes .km)", t_labels), ("scikit-learn predict (in RAM)", t_predict)):
        print(f"| {name} | {t:.2f} | {frames / t:,.0f} |")
    print(f"\n- dump-labels / bare limit: **{t_bare / t_labels:.2f}x** of the limit's rate (target >= 0.9); vs sklearn predict: **{t_predict / t_labels:.2f}x**")


if __name__ == "__main__":
    main()
