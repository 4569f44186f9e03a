"""Does iteration 2 have better labels than MFCC? HuBERT's claim, on any corpus with
phone alignments (default: the demo corpus).

Trains iteration 1 (MFCC k-means targets) and, at every saved checkpoint, clusters every
Transformer layer (k-means on train, at each ``--measure-k``) and measures the PNMI of the
valid split's clusters against the phone alignments; MFCC is scored the same way, on the
same utterances. Writes ``results.json``, ``table.md`` and two plots (PNMI against
updates per layer; PNMI against layer at the last checkpoint) to ``--out``.

    python experiments/iteration_gain.py --out runs/iteration_gain --updates 4500
    python experiments/iteration_gain.py --out runs/real_s0 --corpus SO762 --manifest SO_PREP \
        --alignments SO_PREP/valid.alignments.jsonl --ext WAV --score-train 400 --seed 0

The model, batch and learning rate follow the trial in the issue: 4 layers × 192 dims,
batches of 16 × 2 s, lr 1e-3.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import replace
from pathlib import Path

from hubertkit.cluster.kmeans import dump_labels, learn_kmeans
from hubertkit.cluster.quality import label_quality
from hubertkit.config import config_dir_default
from hubertkit.config.pipeline import load_pipeline
from hubertkit.data.labels import merge_labels
from hubertkit.features.hubert import dump_hubert
from hubertkit.fileio import write_text
from hubertkit.recipes.pipeline import run_pipeline

ROOT = Path(__file__).resolve().parents[1]


def model_overrides(updates: int, every: int) -> list[str]:
    return [
        f"optimization.max_update={updates}", f"lr_scheduler.total_num_update={updates}", "lr_scheduler.warmup_updates=300",
        "optimization.lr=[0.001]", "dataset.max_tokens=512000", "task.max_sample_size=32000",
        f"checkpoint.save_interval_updates={every}", "checkpoint.keep_interval_updates=-1", "dataset.validate_interval_updates=250",
        "model.conv_feature_layers='[(128,10,5)] + [(128,3,2)] * 4 + [(128,2,2)] * 2'",
        "model.encoder_layers=4", "model.encoder_embed_dim=192", "model.encoder_ffn_embed_dim=768",
        "model.encoder_attention_heads=4", "model.conv_pos=32", "model.conv_pos_groups=8", "model.final_dim=64",
    ]


def pnmi_at(feats: Path, nshard: int, k: int, work: Path, tsv: Path, alignments: Path, rate: int) -> float:
    """Fit k-means on the train split of ``feats``, label valid, and score it against the phones."""
    learn_kmeans(feats, "train", nshard, work / f"km{k}.pt", k, progress=False)
    dump_labels(feats, "valid", work / f"km{k}.pt", nshard, "all", work / f"lab{k}", progress=False)
    merge_labels(work / f"lab{k}", "valid", nshard)
    return label_quality(work / f"lab{k}" / "valid.km", alignments, rate, tsv / "valid.tsv").pnmi


def layer_pnmi(ckpt: Path, layers: int, tsv: Path, work: Path, ks: list[int], alignments: Path) -> dict[str, dict[str, float]]:
    out = {str(k): {} for k in ks}
    for layer in range(1, layers + 1):
        feats = work / f"l{layer}"
        for split in ("train", "valid"):
            dump_hubert(tsv, split, ckpt, layer, 1, 0, feats, jobs=2, progress=False)
        for k in ks:
            out[str(k)][str(layer)] = pnmi_at(feats, 1, k, work / f"l{layer}", tsv, alignments, 50)
    return out


def plots(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted(results["mfcc_pnmi"], key=int)
    steps = sorted(results["layers"], key=int)
    layers = sorted(results["layers"][steps[0]][ks[0]], key=int)
    fig, axes = plt.subplots(1, len(ks), figsize=(5 * len(ks), 4), sharey=True, squeeze=False)
    for ax, k in zip(axes[0], ks):
        for layer in layers:
            ax.plot([int(s) for s in steps], [results["layers"][s][k][layer] for s in steps], "o-", label=f"layer {layer}")
        ax.axhline(results["mfcc_pnmi"][k], color="k", ls="--", label=f"MFCC, K={k}")
        ax.set(xlabel="iteration-1 updates", ylabel="valid PNMI", title=f"k-means K={k} on each layer")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "pnmi_vs_updates.png", dpi=110)
    last = steps[-1]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for k in ks:
        line, = ax.plot([int(l) for l in layers], [results["layers"][last][k][l] for l in layers], "o-", label=f"K={k}")
        ax.axhline(results["mfcc_pnmi"][k], color=line.get_color(), ls="--", label=f"MFCC, K={k}")
    ax.set(xlabel="layer", ylabel="valid PNMI", xticks=[int(l) for l in layers], title=f"PNMI against layer, {last} updates")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "pnmi_vs_layer.png", dpi=110)


def table(results: dict) -> str:
    ks = sorted(results["mfcc_pnmi"], key=int)
    layers = sorted(next(iter(results["layers"].values()))[ks[0]], key=int)
    head = ["updates", *[f"K={k} layer {l}" for k in ks for l in layers]]
    rows = [["MFCC", *[f"{results['mfcc_pnmi'][k]:.3f}" for k in ks for _ in layers]]]
    for step in sorted(results["layers"], key=int):
        rows.append([step, *[f"{results['layers'][step][k][l]:.3f}" for k in ks for l in layers]])
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def score_manifest(tsv: Path, out: Path, n_train: int | None) -> Path:
    """The manifests layers are scored on: valid whole, train thinned to ``n_train``
    utterances spread evenly (k-means needs frames, not all of them)."""
    from hubertkit.data.manifest import read_manifest

    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "valid.tsv", (tsv / "valid.tsv").read_text())
    lines = (tsv / "train.tsv").read_text().splitlines()
    rows = lines[1:]
    if n_train and n_train < len(rows):
        rows = [rows[round(i * len(rows) / n_train)] for i in range(n_train)]
    write_text(out / "train.tsv", "\n".join([lines[0], *rows]) + "\n")
    read_manifest(out / "train.tsv")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/iteration_gain"))
    parser.add_argument("--updates", type=int, default=4500)
    parser.add_argument("--every", type=int, default=750, help="checkpoint (and measure) every N updates")
    parser.add_argument("--k", type=int, default=100, help="clusters of the MFCC labels iteration 1 trains on")
    parser.add_argument("--measure-k", default="100,500",
                        help="comma-separated cluster counts at which layers (and MFCC, for reference) are scored")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra training override, after the defaults above (e.g. optimization.lr=[0.0007]); repeatable")
    parser.add_argument("--corpus", default=None, help="audio folder (default: the demo corpus)")
    parser.add_argument("--manifest", default=None, help="folder with train.tsv and valid.tsv to use instead of a random split")
    parser.add_argument("--alignments", default=None, help="phone alignments of the valid utterances (JSONL)")
    parser.add_argument("--ext", default=None, help="audio extension (default: the demo's flac)")
    parser.add_argument("--seed", type=int, default=None, help="training seed (common.seed)")
    parser.add_argument("--score-train", type=int, default=None,
                        help="fit the scoring k-means on this many train utterances, spread evenly (default: all)")
    parser.add_argument("--measure-only", action="store_true",
                        help="score the checkpoints an earlier (perhaps interrupted) run saved; train nothing")
    args = parser.parse_args()
    start = time.time()
    given = {k: v for k, v in (("corpus", args.corpus), ("manifest", args.manifest), ("alignments", args.alignments),
                                ("ext", args.ext)) if v is not None}
    given = {k: str(Path(v).resolve()) if k != "ext" else v for k, v in given.items()}
    cfg = load_pipeline(config_dir_default() / "pipeline_demo.yaml", {"out": str(args.out), "jobs": 2, **given})
    seed = [f"common.seed={args.seed}"] if args.seed is not None else []
    first = replace(cfg.iterations[0], n_clusters=args.k, train_overrides=model_overrides(args.updates, args.every) + seed + args.set)
    cfg = replace(cfg, iterations=[first], disentangle=None, unit_asr=None)
    if not args.measure_only:
        run_pipeline(cfg)
    ck = args.out / "iter1" / "checkpoints"
    tsv = score_manifest(args.out / "manifest", args.out / "score_manifest", args.score_train)
    ks = [int(k) for k in args.measure_k.split(",")]
    from hubertkit.features.dump import dump_mfcc

    for split in ("train", "valid"):
        dump_mfcc(tsv, split, 1, 0, args.out / "mfcc" / "features", jobs=2, progress=False)
    mfcc = {str(k): pnmi_at(args.out / "mfcc" / "features", 1, k, args.out / "mfcc", tsv, Path(cfg.alignments), 100) for k in ks}
    results = {"mfcc_pnmi": mfcc, "layers": {}, "k": args.k, "updates": args.updates, "seed": args.seed,
               "overrides": args.set, "score_train": args.score_train, **given}
    for ckpt in sorted(ck.glob("checkpoint_*_*.pt"), key=lambda p: int(re.findall(r"_(\d+)\.pt$", p.name)[0])):
        step = int(re.findall(r"_(\d+)\.pt$", ckpt.name)[0])
        results["layers"][str(step)] = layer_pnmi(ckpt, 4, tsv, args.out / "layers", ks, Path(cfg.alignments))
        print(step, results["layers"][str(step)], flush=True)
    log = [json.loads(l) for l in (ck / "train_log.jsonl").read_text().splitlines()]
    valid = [r for r in log if r["split"] == "valid"]
    results["valid_acc_m"] = {str(r["update"]): r.get("acc_m_0") for r in valid}
    results["minutes"] = (time.time() - start) / 60
    write_text(args.out / "results.json", json.dumps(results, indent=1) + "\n")
    write_text(args.out / "table.md", table(results))
    plots(results, args.out)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
