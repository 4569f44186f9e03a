"""Peak RSS of learn-kmeans on a 768-dim feature set larger than this machine's RAM.

    python benchmarks/bench_kmeans_memory.py --gib 26 --dir /var/tmp/hubertkit-rss

Writes ``--gib`` GiB of synthetic 768-dim frames (noisy copies of 300 random centres,
utterances of 200-600 frames) as 8 fairseq-style shards, then runs
``hubertkit learn-kmeans DIR train 8 km.pt 100 --percent 1 --max-iter 2`` in a child
process and reports its peak resident memory. The set is deleted afterwards unless
``--keep``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import header  # noqa: E402

from hubertkit.data.shards import ShardWriter  # noqa: E402

DIM, NSHARD = 768, 8


def write_set(root: Path, gib: float, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((300, DIM), dtype=np.float32) * 2
    frames_per_shard = int(gib * 2**30 / (DIM * 4) / NSHARD)
    total = 0
    for rank in range(NSHARD):
        with ShardWriter(root, "train", rank, NSHARD, DIM) as w:
            while w.frames < frames_per_shard:
                n = int(rng.integers(200, 600))
                x = centres[rng.integers(0, 300, n)] + rng.standard_normal((n, DIM), dtype=np.float32)
                w.append(x)
        total += w.frames
        print(f"shard {rank}: {w.frames} frames", file=sys.stderr, flush=True)
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=26.0)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp/hubertkit-rss"))
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--max-iter", type=int, default=2)
    args = parser.parse_args()
    free = shutil.disk_usage(args.dir.parent if not args.dir.exists() else args.dir).free / 2**30
    if free < args.gib + 2:
        sys.exit(f"need {args.gib + 2:.0f} GiB free on {args.dir}, have {free:.0f}")
    args.dir.mkdir(parents=True, exist_ok=True)
    try:
        start = time.time()
        frames = write_set(args.dir, args.gib)
        t_write = time.time() - start
        size = sum(f.stat().st_size for f in args.dir.glob("*.npy")) / 2**30
        cmd = [sys.executable, "-m", "hubertkit", "learn-kmeans", str(args.dir), "train", str(NSHARD),
               str(args.dir / "km.pt"), "100", "--percent", "1", "--max-iter", str(args.max_iter), "-q"]
        start = time.time()
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
        wall = time.time() - start
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    finally:
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(header("learn-kmeans peak memory on a feature set larger than RAM"))
    print(f"- feature set: {frames:,} frames x {DIM} dims float32 = **{size:.1f} GiB** in {NSHARD} shards (RAM: {ram:.0f} GiB); written in {t_write:.0f} s")
    print(f"- `{' '.join(['hubertkit', *cmd[3:]])}`: {wall:.0f} s")
    print(f"- {out}")
    print(f"- peak RSS of the learn-kmeans process: **{rss:.2f} GiB** (target < 2 GB)")


if __name__ == "__main__":
    main()
