"""Convergence of both iterations, seed by seed: the best layer's held-out PNMI against
updates, for iteration 1 (``iteration_gain.py``'s results) and iteration 2
(``iteration2_gain.py --every``'s ``curve``), one table and one plot.

    python experiments/convergence.py --iter1 experiments/results/so40_it1_s0.json \\
        --iter2 experiments/results/so40_it2k500_s0.json --arm warm --out docs/img/so40_convergence

``--iter1`` and ``--iter2`` take one file per seed, in the same seed order. The gain of
iteration 2 is taken at each iteration's last point, seed by seed, with whether its sign
holds in every seed (a comparison that changes sign between seeds is not a result).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from seeds_summary import per_run, spread, write_summary


def iter1_curve(result: dict, k: str) -> dict[int, float]:
    """Updates → the best layer's PNMI, from an ``iteration_gain.py`` results file."""
    return {int(step): max(scores[k].values()) for step, scores in result["layers"].items()}


def iter2_curve(result: dict, arm: str) -> dict[int, float]:
    """Updates → the best layer's PNMI of one arm, from an ``iteration2_gain.py`` results file."""
    return {int(step): max(scores.values()) for step, scores in result["curve"][arm].items()}


def load(iter1: list[Path], iter2: list[Path], arm: str) -> list[dict]:
    if len(iter1) != len(iter2):
        raise SystemExit(f"--iter1 has {len(iter1)} files and --iter2 {len(iter2)}: give one of each per seed")
    seeds = []
    for a, b in zip(iter1, iter2):
        r1, r2 = json.loads(a.read_text()), json.loads(b.read_text())
        if r1["seed"] != r2["seed"]:
            raise SystemExit(f"{a} is seed {r1['seed']} but {b} is seed {r2['seed']}")
        k = str(r2["measure_k"])
        seeds.append({"seed": r1["seed"], "mfcc": r1["mfcc_pnmi"][k], "iter1": iter1_curve(r1, k),
                      "iter2": iter2_curve(r2, arm), "k2": r2["k"], "measure_k": k})
    return seeds


def table(seeds: list[dict], arm: str) -> str:
    steps = sorted(set().union(*(s["iter1"] for s in seeds), *(s["iter2"] for s in seeds)))
    lines = [f"Best layer's held-out PNMI (K={seeds[0]['measure_k']} k-means per layer) against updates; "
             f"iteration 2 {arm}, on K={seeds[0]['k2']} labels of iteration 1's best layer", "",
             "| updates | " + " | ".join(f"iteration 1, seed {s['seed']} | iteration 2, seed {s['seed']}" for s in seeds) + " |",
             "|---:|" + "---:|" * (2 * len(seeds))]
    for step in steps:
        cells = [f"{s[it][step]:.3f}" if step in s[it] else "" for s in seeds for it in ("iter1", "iter2")]
        lines.append(f"| {step:,} | " + " | ".join(cells) + " |")
    last = [(s["iter1"][max(s["iter1"])], s["iter2"][max(s["iter2"])]) for s in seeds]
    gains = [b - a for a, b in last]
    lines += ["", f"- MFCC labels (iteration 1's targets): {spread([s['mfcc'] for s in seeds])}",
              f"- iteration 1 at its last point: {spread([a for a, _ in last])}",
              f"- iteration 2 at its last point: {spread([b for _, b in last])}",
              "- " + per_run("iteration 2 minus iteration 1, last points", gains)]
    return "\n".join(lines) + "\n"


def plot(seeds: list[dict], arm: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for it, name, color in (("iter1", "iteration 1 (MFCC targets)", "C0"), ("iter2", f"iteration 2 ({arm})", "C1")):
        for i, s in enumerate(seeds):
            steps = sorted(s[it])
            ax.plot(steps, [s[it][x] for x in steps], "o-", color=color, alpha=0.8,
                    label=name if i == 0 else None)
    ax.axhline(float(np.mean([s["mfcc"] for s in seeds])), color="k", ls="--", label="MFCC labels")
    ax.set(xlabel="updates within the iteration", ylabel="best layer's held-out PNMI",
           title=f"{len(seeds)} seed(s): " + ", ".join(str(s["seed"]) for s in seeds))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iter1", nargs="+", type=Path, required=True, help="iteration_gain.py results, one per seed")
    ap.add_argument("--iter2", nargs="+", type=Path, required=True, help="iteration2_gain.py results, one per seed")
    ap.add_argument("--arm", default="warm", help="the iteration-2 arm to follow (scratch or warm)")
    ap.add_argument("--out", type=Path, required=True, help="path stem of the table (STEM.md) and the plot (STEM.png)")
    a = ap.parse_args()
    seeds = load(a.iter1, a.iter2, a.arm)
    write_summary(a.out, table(seeds, a.arm), lambda out: plot(seeds, a.arm, out))


if __name__ == "__main__":
    main()
