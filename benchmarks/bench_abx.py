"""ABX: hubertkit against the ZeroSpeech team's implementation (zerospeech-libriabx, its
Cython DTW compiled against this numpy), on the same features and the same items, in
the same run: time, peak memory (each in its own process) and the scores.

    python benchmarks/bench_abx.py [--ckpt experiments/checkpoints/real_iter1.pt] [--layers 1,3]
        [--tsv-dir DIR --split SPLIT --alignments FILE] [--context-free]

Features: layers of the checkpoint on a manifest (default: the demo corpus, 11 minutes
of real speech, 24 speakers), items from its phone alignments. No subsampling on either
side (groups and X speakers under the limits), so the two compute the same triplets.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import header  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LIMITS = dict(max_size_group=1000, max_x_across=1000)


def run_side(side: str, work: Path) -> None:
    """In a fresh process: score every layer saved in ``work``; print seconds and scores."""
    feats_all = np.load(work / "features.npz")
    layers = sorted({k.split("|")[0] for k in feats_all.files})
    out = {}
    if side == "reference":
        import types

        import pyximport
        import torch

        pyximport.install(setup_args={"include_dirs": np.get_include()}, build_dir=str(work / "b"), language_level=3)
        sys.path.insert(0, str(work))
        import abx_reference_dtw

        sys.modules["libri_light_dtw"] = abx_reference_dtw
        sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
        import progressbar
        from libriabx.libri_light.eval_ABX import ABX

        # its across iterator counts its length with max_x_across=5 whatever is asked, so a
        # larger limit overflows its progress bar; the bar is only display
        progressbar.ProgressBar = lambda *a, **k: progressbar.NullBar()
    else:
        from hubertkit.cluster.abx import abx_error_rates, read_item_file

        items = read_item_file(work / "items.item")
    start = time.perf_counter()
    for layer in layers:
        feats = {k.split("|", 1)[1]: feats_all[k] for k in feats_all.files if k.startswith(layer + "|")}
        if side == "reference":
            out[layer] = ABX(lambda k: torch.from_numpy(feats[k].copy()), str(work / "items.item"), [(k, k) for k in feats],
                             "cosine", 50, ["within", "across"], **LIMITS)
        else:
            out[layer] = abx_error_rates(feats, items, 50, **LIMITS)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "scores": out, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default=str(ROOT / "experiments/checkpoints/real_iter1.pt"))
    parser.add_argument("--layers", default="all", help="comma-separated layer numbers, or all")
    parser.add_argument("--tsv-dir", type=Path, default=None, help="a manifest folder (default: the demo corpus's)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--alignments", type=Path, default=ROOT / "hubertkit/corpora/demo/alignments.jsonl")
    parser.add_argument("--context-free", action="store_true",
                        help="every item's neighbours replaced by one symbol: phones compared in any context")
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return run_side(args.side, args.work)

    from hubertkit.cluster.abx import write_item_file
    from hubertkit.data.manifest import make_manifest, read_manifest
    from hubertkit.model.io import load_model
    from hubertkit.recipes.abx import layer_features, load_items

    work = Path(tempfile.mkdtemp())
    if args.tsv_dir is None:
        make_manifest(ROOT / "hubertkit/corpora/demo", work, valid_percent=0)
    manifest = read_manifest((args.tsv_dir or work) / f"{args.split}.tsv")
    items = load_items(args.alignments)
    if args.context_free:
        items = dataclasses.replace(items, prev=["#"] * len(items), next=["#"] * len(items))
    write_item_file(items, work / "items.item")
    model = load_model(args.ckpt)
    every = layer_features(model, manifest, set(items.files), progress=False)
    layers = range(len(every)) if args.layers == "all" else [int(x) for x in args.layers.split(",")]
    np.savez(work / "features.npz", **{f"layer {n:02d}|{k}": v for n in layers for k, v in every[n].items()})
    import importlib.util

    shutil.copy(Path(importlib.util.find_spec("libriabx").submodule_search_locations[0]) / "libri_light/ABX_src/dtw.pyx",
                work / "abx_reference_dtw.pyx")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    results = {}
    for side in ("reference", "hubertkit"):  # the reference first: its first run compiles its DTW, untimed below
        if side == "reference":
            subprocess.run([sys.executable, "-c", "import sys, numpy, pyximport; pyximport.install(setup_args={'include_dirs': "
                            f"numpy.get_include()}}, build_dir='{work}/b', language_level=3); sys.path.insert(0, '{work}'); "
                            "import abx_reference_dtw"], check=True, env=env)
        run = subprocess.run([sys.executable, __file__, "--side", side, "--work", str(work)], env=env,
                             capture_output=True, text=True)
        if run.returncode:
            raise SystemExit(f"the {side} side failed:\n{run.stderr[-3000:]}")
        results[side] = json.loads(run.stdout.strip().splitlines()[-1])
    ours, ref = results["hubertkit"], results["reference"]
    print(header("ABX against zerospeech-libriabx"))
    corpus = "the demo corpus (192 utterances, 11 min, 24 speakers)" if args.tsv_dir is None else f"`{manifest.path}`"
    minutes = sum(len(v) for v in every[0].values()) / 50 / 60
    kind = " with every context replaced by one (`--context-free`)" if args.context_free else ""
    print(f"- features: layers {', '.join(str(n) for n in layers)} of `{Path(args.ckpt).name}` on {corpus}, "
          f"{len(every[0])} utterances, {minutes:.1f} min; {len(items)} items from `{args.alignments.name}`{kind}; "
          "50 frames/s; no subsampling\n")
    print("| layer | within, hubertkit | within, reference | across, hubertkit | across, reference |")
    print("|---|---:|---:|---:|---:|")
    worst = 0.0
    for layer in sorted(ours["scores"]):
        a, b = ours["scores"][layer], ref["scores"][layer]
        worst = max(worst, abs(a["within"] - b["within"]), abs(a["across"] - b["across"]))
        print(f"| {layer.split()[1].lstrip('0') or '0'} | {100 * a['within']:.3f} | {100 * b['within']:.3f} "
              f"| {100 * a['across']:.3f} | {100 * b['across']:.3f} |")
    print(f"\n- largest difference: **{100 * worst:.4f} percentage points** (target ≤ 0.1)")
    print(f"- time, all layers: hubertkit **{ours['seconds']:.1f} s**, reference **{ref['seconds']:.1f} s**: "
          f"**{ref['seconds'] / ours['seconds']:.1f}x** (target ≥ 5)")
    print(f"- peak RSS of the scoring process: hubertkit {ours['peak_rss_gb']:.2f} GB, reference {ref['peak_rss_gb']:.2f} GB")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
