"""ABX per layer of several models (seeds), against MFCC and its k-means labels, on one
split with phone alignments: the field's measure beside docs/real_speech.md's PNMI.

    python experiments/abx_layers.py --tsv SO_PREP --split valid --alignments SO_PREP/valid.alignments.jsonl \
        --mfcc FEAT_DIR --units runs/real_ig_s0/iter1/labels/valid.km \
        --model seed0=experiments/checkpoints/real_iter1.pt --model seed1=runs/real_ig_s1/iter1/checkpoints/checkpoint_last.pt \
        --out runs/abx_real.json

Prints a markdown table: each reference row, then each layer's mean ± sd (min–max) over
the models, within and across speakers, in percent, and the layers whose every model is
below the MFCC features (**<**).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from seeds_summary import spread  # noqa: E402

from hubertkit.fileio import write_text  # noqa: E402
from hubertkit.recipes.abx import abx  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tsv", required=True)
    ap.add_argument("--split", default="valid")
    ap.add_argument("--alignments", required=True)
    ap.add_argument("--mfcc", help="a dump-mfcc folder of the split")
    ap.add_argument("--units", action="append", default=[], metavar="[NAME=]FILE", help="a .km label file or units JSONL")
    ap.add_argument("--model", action="append", default=[], metavar="NAME=CKPT")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    common = dict(alignments=a.alignments, progress=False)
    results = json.loads(a.out.read_text()) if a.out.is_file() else {}  # a re-run scores only what is new
    sources = {}
    if a.mfcc:
        sources["MFCC features"] = a.mfcc
    for spec in a.units:
        name, _, path = spec.rpartition("=")
        sources[name or f"units {Path(path).name}"] = path
    for spec in a.model:
        name, _, path = spec.partition("=")
        sources[name] = path
    for name, path in sources.items():
        if name not in results:
            results[name] = abx(path, a.tsv, a.split, **common)["scores"]
            write_text(a.out, json.dumps(results, indent=1) + "\n")
    models = [spec.partition("=")[0] for spec in a.model]
    refs = [n for n in sources if n not in models]
    lines = ["| | within (%) | across (%) |", "|---|---:|---:|"]
    for name in refs:
        s = next(iter(results[name].values()))
        lines.append(f"| {name} | {100 * s['within']:.2f} | {100 * s['across']:.2f} |")
    mfcc = next(iter(results["MFCC features"].values())) if "MFCC features" in results else None
    for layer in results[models[0]] if models else []:
        cells = []
        for mode in ("within", "across"):
            values = np.array([100 * results[m][layer][mode] for m in models])
            below = mfcc is not None and (values < 100 * mfcc[mode]).all()
            cells.append(spread(values) + (" **<**" if below else ""))
        lines.append(f"| {layer} ({len(models)} models) | {cells[0]} | {cells[1]} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
