"""Mean and spread over seeds of ``iteration_gain.py`` runs: one table and one plot.

    python experiments/seeds_summary.py runs/real_s0 runs/real_s1 runs/real_s2 --out docs/img/real_iteration_gain

Each run is its folder or its ``results.json`` (as committed in ``experiments/results``).
Runs scored at different checkpoints are summarised at the checkpoints they share.

For each checkpoint and layer: the PNMI of k-means on that layer, mean ± standard
deviation over the runs, with min–max; the MFCC labels' PNMI the same way (it varies only
with the k-means seed, which is fixed, so its spread is 0 unless the runs differ). A layer
"beats MFCC" only if its worst seed beats MFCC's best.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from hubertkit.fileio import write_text


def load(runs: list[Path]) -> tuple[list[dict], list[str]]:
    """The runs' results, and the checkpoints scored in every run."""
    results = [json.loads((r / "results.json" if r.is_dir() else r).read_text()) for r in runs]
    steps = sorted(set.intersection(*(set(r["layers"]) for r in results)), key=int)
    if not steps:
        raise SystemExit(f"the runs share no scored checkpoint: {[sorted(r['layers'], key=int) for r in results]}")
    return results, steps


def spread(values) -> str:
    """Mean ± sample standard deviation (min–max) of one number over seeds."""
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.3f} ± {a.std(ddof=1) if len(a) > 1 else 0:.3f} ({a.min():.3f}–{a.max():.3f})"


def per_run(what: str, differences) -> str:
    """One line: a difference per run, and whether its sign is the same in every run (a
    comparison that changes sign between seeds is not a result)."""
    same = all(d > 0 for d in differences) or all(d < 0 for d in differences)
    return (f"{what}, per run: " + ", ".join(f"{d:+.3f}" for d in differences)
            + (" (the same sign in every run)" if same else " (not the same sign in every run)"))


def write_summary(out: Path, text: str, plot) -> None:
    """The table as ``STEM.md`` and on stdout, the plot as ``STEM.png`` (``plot(out)``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out.with_suffix(".md"), text)
    plot(out)
    print(text)


def summary(results: list[dict], steps: list[str], k: str) -> dict:
    layers = sorted(results[0]["layers"][steps[0]][k], key=int)
    mfcc = np.array([r["mfcc_pnmi"][k] for r in results])
    table = {s: {l: np.array([r["layers"][s][k][l] for r in results]) for l in layers} for s in steps}
    return {"steps": steps, "layers": layers, "mfcc": mfcc, "table": table}


def markdown(s: dict, k: str, n: int) -> str:
    head = ["updates", *[f"layer {l}" for l in s["layers"]]]
    rows = [["MFCC", *[spread(s["mfcc"]) for _ in s["layers"]]]]
    for step in s["steps"]:
        cells = []
        for l in s["layers"]:
            a = s["table"][step][l]
            mark = " **>**" if a.min() > s["mfcc"].max() else ""
            cells.append(spread(a) + mark)
        rows.append([step, *cells])
    lines = [f"PNMI, K={k}, mean ± sd (min–max) over {n} seeds; **>**: every seed above every MFCC value", "",
             "| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def plot(s: dict, k: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    x = [int(v) for v in s["steps"]]
    for l in s["layers"]:
        a = np.stack([s["table"][step][l] for step in s["steps"]])
        line, = ax.plot(x, a.mean(1), "o-", label=f"layer {l}")
        ax.fill_between(x, a.min(1), a.max(1), color=line.get_color(), alpha=0.2)
    ax.axhspan(s["mfcc"].min(), s["mfcc"].max() + 1e-4, color="k", alpha=0.3)
    ax.axhline(s["mfcc"].mean(), color="k", ls="--", label=f"MFCC labels, K={k}")
    ax.set(xlabel="iteration-1 updates", ylabel="held-out PNMI", title=f"k-means K={k} on each layer (bands: min–max of seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out.with_name(f"{out.name}_k{k}.png"), dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="path stem of the table (STEM.md) and plots (STEM_kK.png)")
    a = ap.parse_args()
    results, steps = load(a.runs)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    text = ""
    for k in sorted(results[0]["mfcc_pnmi"], key=int):
        s = summary(results, steps, k)
        text += markdown(s, k, len(results)) + "\n"
        plot(s, k, a.out)
    write_text(a.out.with_suffix(".md"), text)
    print(text)


if __name__ == "__main__":
    main()
