"""Does iteration 2 have better labels than MFCC? HuBERT's claim, on the demo corpus.

Trains iteration 1 (MFCC k-means targets) and, at every saved checkpoint, clusters every
Transformer layer (k-means on train, K as the MFCC labels) and measures the PNMI of the
valid split's clusters against the phone alignments. Writes ``results.json``, two plots
(PNMI against updates per layer; PNMI against layer at the last checkpoint) and a
markdown table to ``--out``.

    python experiments/iteration_gain.py --out runs/iteration_gain --updates 4500

The model, batch and learning rate follow the trial in the issue: 4 layers × 192 dims,
batches of 16 × 2 s, lr 1e-3.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from hubertkit.cluster.kmeans import dump_labels, learn_kmeans
from hubertkit.cluster.quality import label_quality
from hubertkit.config import config_dir_default
from hubertkit.features.hubert import dump_hubert
from hubertkit.pipeline import load_pipeline, run_pipeline

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


def layer_pnmi(ckpt: Path, layers: int, tsv: Path, work: Path, k: int, alignments: Path) -> dict[int, float]:
    out = {}
    for layer in range(1, layers + 1):
        feats = work / f"l{layer}"
        for split in ("train", "valid"):
            dump_hubert(tsv, split, ckpt, layer, 1, 0, feats, jobs=2, progress=False)
        learn_kmeans(feats, "train", 1, work / f"km{layer}.pt", k, progress=False)
        dump_labels(feats, "valid", work / f"km{layer}.pt", 1, 0, work / f"lab{layer}", progress=False)
        out[layer] = label_quality(work / f"lab{layer}" / "valid_0_1.km", alignments, 50, tsv / "valid.tsv").pnmi
    return out


def plots(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = sorted(int(u) for u in results["layers"])
    layers = sorted(int(l) for l in results["layers"][str(steps[0])])
    fig, ax = plt.subplots(figsize=(6, 4))
    for layer in layers:
        ax.plot(steps, [results["layers"][str(s)][str(layer)] for s in steps], "o-", label=f"layer {layer}")
    ax.axhline(results["mfcc_pnmi"], color="k", ls="--", label="MFCC labels (iteration 1 targets)")
    ax.set(xlabel="iteration-1 updates", ylabel="valid PNMI", title="PNMI of k-means on each layer")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "pnmi_vs_updates.png", dpi=110)
    last = str(steps[-1])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(layers, [results["layers"][last][str(l)] for l in layers], "o-", label=f"after {last} updates")
    ax.axhline(results["mfcc_pnmi"], color="k", ls="--", label="MFCC labels")
    ax.set(xlabel="layer", ylabel="valid PNMI", xticks=layers, title="PNMI against layer")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "pnmi_vs_layer.png", dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/iteration_gain"))
    parser.add_argument("--updates", type=int, default=4500)
    parser.add_argument("--every", type=int, default=750, help="checkpoint (and measure) every N updates")
    parser.add_argument("--k", type=int, default=100)
    args = parser.parse_args()
    start = time.time()
    cfg = load_pipeline(config_dir_default() / "pipeline_demo.yaml", {"out": str(args.out), "jobs": 2})
    cfg.iterations = cfg.iterations[:1]
    cfg.iterations[0].n_clusters = args.k
    cfg.iterations[0].train_overrides = model_overrides(args.updates, args.every)
    run_pipeline(cfg)
    tsv, ck = args.out / "manifest", args.out / "iter1" / "checkpoints"
    mfcc = json.loads((args.out / "iter1" / "quality.json").read_text())["valid"]["pnmi"]
    results = {"mfcc_pnmi": mfcc, "layers": {}, "k": args.k, "updates": args.updates}
    for ckpt in sorted(ck.glob("checkpoint_*_*.pt"), key=lambda p: int(re.findall(r"_(\d+)\.pt$", p.name)[0])):
        step = int(re.findall(r"_(\d+)\.pt$", ckpt.name)[0])
        results["layers"][str(step)] = {str(l): v for l, v in layer_pnmi(ckpt, 4, tsv, args.out / "layers", args.k,
                                                                         Path(cfg.alignments)).items()}
        print(step, results["layers"][str(step)], flush=True)
    log = [json.loads(l) for l in (ck / "train_log.jsonl").read_text().splitlines()]
    valid = [r for r in log if r["split"] == "valid"]
    results["valid_acc_m"] = {str(r["update"]): r.get("acc_m_0") for r in valid}
    results["minutes"] = (time.time() - start) / 60
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    plots(results, args.out)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
