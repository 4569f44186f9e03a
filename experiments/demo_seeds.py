"""The demo pipeline over several seeds: which of its numbers hold, and how much they move.

    python experiments/demo_seeds.py --out runs/demo_seeds --seeds 1 2 3
    python experiments/demo_seeds.py --out runs/demo_seeds_adversary_only --seeds 1 2 3 \
        --disentangle-set criterion.pitch_loss_weight=0 --disentangle-set model.pitch_layer=0

Each seed re-runs ``configs/pipeline_demo.yaml`` (default corpus: the real-speech demo
corpus) up to the disentangling probes, with that seed for every training
(``common.seed``) and for the k-means; the train/valid split is the demo's own (its
``seed: 0``) for all, so the seeds differ in initialisation, batch order, masks and
k-means only. Writes ``results.json`` (every number of every seed) and ``table.md``:
per number, mean ± sample standard deviation and min–max; a comparison is called as
holding only if it has the same sign in every seed.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from hubertkit.config import config_dir_default
from hubertkit.config.pipeline import load_pipeline
from hubertkit.data.manifest import make_manifest
from hubertkit.fileio import write_text
from hubertkit.recipes.pipeline import run_pipeline
from hubertkit.recipes.probe import read_probes
from seeds_summary import spread


def demo_config(args, **given):
    if args.corpus:
        given.update(corpus=str(Path(args.corpus).resolve()), alignments=str(Path(args.alignments).resolve()))
    return load_pipeline(config_dir_default() / "pipeline_demo.yaml", given)


def run_seed(seed: int, args, manifest: Path) -> dict:
    out = args.out / f"seed{seed}"
    cfg = demo_config(args, out=str(out), jobs=2, seed=seed, manifest=str(manifest))
    dis = cfg.disentangle
    cfg = replace(cfg, unit_asr=None, disentangle=replace(dis, train_overrides=[*dis.train_overrides, f"common.seed={seed}",
                                                                              *args.disentangle_set]),
                  iterations=[replace(it, train_overrides=[*it.train_overrides, f"common.seed={seed}"]) for it in cfg.iterations])
    run_pipeline(cfg, progress=False)
    numbers = {f"{it.name} valid PNMI": json.loads((out / it.name / "quality.json").read_text())["valid"]["pnmi"]
               for it in cfg.iterations}
    probes = out / "disentangled" / "probe"
    summary = json.loads((probes / "summary.json").read_text())
    for name, pnmi in summary["pnmi"].items():
        numbers[f"layer {summary['speaker_layer']} PNMI, {name}"] = pnmi
    for name in ("plain", "disentangled"):
        for p in read_probes(probes / name / "probe.json"):
            numbers[f"layer {p.layer} speaker acc, {name}"] = p.speaker_acc
            numbers[f"layer {p.layer} phone acc, {name}"] = p.phone_acc
    return numbers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/demo_seeds"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--corpus", default=None, help="audio folder (default: the demo corpus)")
    ap.add_argument("--alignments", default=None, help="its phone alignments (with --corpus)")
    ap.add_argument("--disentangle-set", action="append", default=[], metavar="KEY=VALUE",
                    help="training override of the disentangled model only (e.g. criterion.pitch_loss_weight=0); repeatable")
    args = ap.parse_args()
    demo = demo_config(args)
    split = (args.out / "manifest").resolve()
    if not (split / "valid.tsv").is_file():
        make_manifest(demo.corpus, split, demo.ext, demo.valid_percent, demo.seed)
    results = {}
    for seed in args.seeds:
        results[seed] = run_seed(seed, args, split)
        print(seed, json.dumps(results[seed]), flush=True)
    write_text(args.out / "results.json", json.dumps(results, indent=1) + "\n")
    keys = list(results[args.seeds[0]])
    rows = ["| number | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean ± sd (min–max) |",
            "|---|" + "---:|" * (len(args.seeds) + 1)]
    for key in keys:
        v = np.array([results[s][key] for s in args.seeds], dtype=float)
        rows.append(f"| {key} | " + " | ".join(f"{x:.3f}" for x in v) + f" | {spread(v)} |")
    comparisons = [("iter2 valid PNMI", "iter1 valid PNMI")]
    for key in keys:
        if key.endswith(", disentangled"):
            comparisons.append((key, key.replace(", disentangled", ", plain")))
    rows += ["", "| comparison | differences per seed | holds in every seed |", "|---|---|---|"]
    for a, b in comparisons:
        d = [results[s][a] - results[s][b] for s in args.seeds]
        sign = "yes: higher" if all(x > 0 for x in d) else "yes: lower" if all(x < 0 for x in d) else "no"
        rows.append(f"| {a} − {b} | " + ", ".join(f"{x:+.3f}" for x in d) + f" | {sign} |")
    write_text(args.out / "table.md", "\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
