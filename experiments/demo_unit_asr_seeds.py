"""How much the demo's unit-ASR comparison moves: the unit-ASR stages of a finished
``hubertkit demo`` run trained again with other seeds (``common.seed``: initialisation,
batch order, dropout) on the same units. Every stage upstream is the demo's own and is
skipped; the run's own scores are read first. Run it with the hubertkit that ran the
demo (the stages record the corpus path; it refuses another).

    hubertkit demo --out demo_out
    python experiments/demo_unit_asr_seeds.py --demo-out demo_out --seeds 2 3 --out runs/demo_unit_asr_seeds

Writes ``results.json`` (CER and WER per iteration and seed) and ``table.md``: per
iteration the CER's mean ± sd (min–max), and per seed iter1's CER minus iter2's, with
whether its sign holds in every seed. Afterwards the demo folder's unit-ASR models are
the last seed's (a later ``hubertkit demo`` there trains the demo's own again).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from seeds_summary import per_run, spread

from hubertkit.config import config_dir_default
from hubertkit.config.pipeline import parse_pipeline
from hubertkit.fileio import write_text
from hubertkit.recipes.demo import demo_tree
from hubertkit.recipes.pipeline import run_pipeline


def scores(out: Path, iterations: list[str]) -> dict:
    return {it: json.loads((out / "unit_asr" / it / "scores.json").read_text()) for it in iterations}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo-out", required=True, help="the demo run's folder, as given to hubertkit demo --out")
    ap.add_argument("--seeds", type=int, nargs="+", required=True, help="unit-ASR training seeds besides the demo's own")
    ap.add_argument("--jobs", type=int, default=2, help="as given to hubertkit demo (it is part of the stages' inputs)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    tree = demo_tree(args.demo_out, jobs=args.jobs)
    made_from = json.loads((Path(args.demo_out) / "stages" / "manifest.json").read_text())["inputs"]["corpus"]
    if made_from != tree["corpus"]:  # the stages' digests hold the corpus path: every stage would run again
        raise SystemExit(f"{args.demo_out} is the demo of the hubertkit at {made_from}, not of this one "
                         f"({tree['corpus']}): run this script with that installation")
    iterations = tree["unit_asr"].get("iterations") or [it["name"] for it in tree["iterations"]]
    demo_out = Path(args.demo_out)
    results = {"demo": scores(demo_out, iterations)}
    base = tree["unit_asr"].get("train_overrides", [])
    for seed in args.seeds:
        tree["unit_asr"]["train_overrides"] = [*base, f"common.seed={seed}"]
        run_pipeline(parse_pipeline(tree, config_dir_default()), progress=False)
        results[f"seed {seed}"] = scores(demo_out, iterations)
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "results.json", json.dumps(results, indent=1) + "\n")
    runs = list(results)
    lines = ["| units | " + " | ".join(f"CER, {r}" for r in runs) + " | mean ± sd (min–max) |",
             "|---|" + "---:|" * (len(runs) + 1)]
    for it in iterations:
        cers = [results[r][it]["cer"] for r in runs]
        lines.append(f"| {it} labels | " + " | ".join(f"{c:.3f}" for c in cers) + f" | {spread(cers)} |")
    if len(iterations) == 2:
        a, b = iterations
        lines += ["", "- " + per_run(f"{a} CER minus {b} CER", np.subtract([results[r][a]["cer"] for r in runs],
                                                                            [results[r][b]["cer"] for r in runs]))]
    write_text(args.out / "table.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
