"""Mean and spread over seeds of ``iteration2_gain.py`` runs: one table and one plot.

    python experiments/iteration2_summary.py runs/real_it2_s0 runs/real_it2_s1 runs/real_it2_s2 \\
        --mfcc 0.260 --out docs/img/real_iteration2

Per model (iteration 1, iteration 2 from scratch, iteration 2 warm-started) and layer:
the held-out PNMI of k-means on that layer, mean ± sd (min–max) over the seeds. Then,
seed by seed, each iteration-2 arm's best layer against iteration 1's best layer, and
the two arms against each other, with whether the sign holds in every seed (a
comparison that changes sign between seeds is not a result).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from seeds_summary import per_run, spread, write_summary

MODELS = {"iter1": "iteration 1 (MFCC targets)", "scratch": "iteration 2, from scratch",
          "warm": "iteration 2, warm-started from iteration 1"}


def load(runs: list[Path]) -> list[dict]:
    results = [json.loads((r / "results.json").read_text()) for r in runs]
    missing = [f"{r}: {m}" for r, res in zip(runs, results) for m in MODELS if m not in res["layers"]]
    if missing:
        raise SystemExit(f"runs not finished: {missing}")
    for key in ("k", "measure_k", "updates", "score_train"):
        if len({res[key] for res in results}) > 1:
            raise SystemExit(f"the runs differ in {key}: {[res[key] for res in results]}")
    return results


def table(results: list[dict], mfcc: float | None) -> str:
    layers = sorted(results[0]["layers"]["iter1"], key=int)
    r0 = results[0]
    lines = [f"Held-out PNMI of k-means (K={r0['measure_k']}) on each layer, mean ± sd (min–max) over "
             f"{len(results)} seeds (iteration-2 labels: K={r0['k']} on iteration 1's best layer; "
             f"{r0['updates']} updates per model)", "",
             "| model | " + " | ".join(f"layer {l}" for l in layers) + " | best layer |", "|---|" + "---:|" * (len(layers) + 1)]
    if mfcc is not None:
        lines.append("| MFCC labels (iteration 1's targets) | " + " | ".join(f"{mfcc:.3f}" for _ in layers) + " | |")
    for model, name in MODELS.items():
        cells = [spread([r["layers"][model][l] for r in results]) for l in layers]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {spread([best(r, model) for r in results])} |")
    iter1, scratch, warm = ([best(r, m) for r in results] for m in MODELS)
    lines += ["", "Best layer, seed by seed (" + ", ".join(f"seed {r['seed']}" for r in results) + "):", "",
              "- " + per_run("iteration 2 from scratch minus iteration 1", np.subtract(scratch, iter1)),
              "- " + per_run("iteration 2 warm-started minus iteration 1", np.subtract(warm, iter1)),
              "- " + per_run("warm-started minus from scratch", np.subtract(warm, scratch)),
              "- labelling layer of iteration 1 per seed: " + ", ".join(str(r["label_layer"]) for r in results)]
    return "\n".join(lines) + "\n"


def best(result: dict, model: str) -> float:
    return max(result["layers"][model].values())


def plot(results: list[dict], mfcc: float | None, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = sorted(results[0]["layers"]["iter1"], key=int)
    x = [int(l) for l in layers]
    fig, ax = plt.subplots(figsize=(6, 4))
    for model, name in MODELS.items():
        a = np.array([[r["layers"][model][l] for l in layers] for r in results])
        line, = ax.plot(x, a.mean(0), "o-", label=name)
        ax.fill_between(x, a.min(0), a.max(0), color=line.get_color(), alpha=0.2)
    if mfcc is not None:
        ax.axhline(mfcc, color="k", ls="--", label="MFCC labels")
    ax.set(xlabel="layer", ylabel="held-out PNMI", xticks=x,
           title=f"K={results[0]['measure_k']} k-means per layer, {len(results)} seeds (bands: min–max)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--mfcc", type=float, default=None, help="the MFCC labels' PNMI under the same protocol, for reference")
    ap.add_argument("--out", type=Path, required=True, help="path stem of the table (STEM.md) and the plot (STEM.png)")
    a = ap.parse_args()
    results = load(a.runs)
    write_summary(a.out, table(results, a.mfcc), lambda out: plot(results, a.mfcc, out))


if __name__ == "__main__":
    main()
