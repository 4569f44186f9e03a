"""Does iteration 2 make better labels than iteration 1? The rest of HuBERT's claim, on
any corpus with phone alignments, for one iteration-1 model (one seed).

From an iteration-1 checkpoint (``iteration_gain.py``'s, or ``real_iter1.pt``):

1. every layer of it is scored as ``iteration_gain.py`` scores layers (k-means with
   ``--measure-k`` clusters fitted on ``--score-train`` train utterances, held-out PNMI
   against the alignments); the best layer is the one the pipeline's ``layer: auto``
   would choose;
2. k-means with ``--k`` clusters on that layer's features of the whole train split
   gives the iteration-2 labels (50 Hz), as the pipeline's iteration 2 does;
3. iteration 2 is trained on them twice, at the same budget and seed: ``scratch``
   (random initialisation, as the paper does) and ``warm`` (``checkpoint.finetune_from_model``
   = the iteration-1 model: its encoder, new label embeddings when K differs);
4. every layer of both is scored like step 1, at the end and every ``--every`` updates
   (the convergence curve, in ``curve``).

Every step is skipped when its result is already in ``OUT/results.json`` (an interrupted
run resumes; training resumes from its last checkpoint).

    python experiments/iteration2_gain.py --iter1 experiments/checkpoints/real_iter1.pt \\
        --manifest SO_PREP --alignments SO_PREP/alignments.jsonl --out runs/real_it2_s0 --seed 0
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hubertkit.data.labels import make_dict
from hubertkit.fileio import write_text
from hubertkit.model.io import load_model
from hubertkit.recipes.pipeline import layer_labels
from hubertkit.train.trainer import train

from iteration_gain import layer_pnmi, model_overrides, score_manifest

ARMS = ("scratch", "warm")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iter1", type=Path, required=True, help="the iteration-1 checkpoint")
    parser.add_argument("--manifest", type=Path, required=True, help="folder with train.tsv and valid.tsv")
    parser.add_argument("--alignments", type=Path, required=True, help="phone alignments of the valid utterances (JSONL)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0, help="training seed of both arms, and of the labelling k-means")
    parser.add_argument("--k", type=int, default=100, help="clusters of the iteration-2 labels")
    parser.add_argument("--measure-k", type=int, default=100, help="clusters at which layers are scored")
    parser.add_argument("--updates", type=int, default=1500)
    parser.add_argument("--every", type=int, default=None,
                        help="also score the checkpoints saved every N updates (default: only the last)")
    parser.add_argument("--score-train", type=int, default=400,
                        help="fit the scoring k-means on this many train utterances, spread evenly")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {ARMS}")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    record = args.out / "results.json"
    results = json.loads(record.read_text()) if record.exists() else {}
    results.update(iter1=str(args.iter1.resolve()), seed=args.seed, k=args.k, measure_k=args.measure_k,
                   updates=args.updates, score_train=args.score_train)

    def save():
        write_text(record, json.dumps(results, indent=1) + "\n")

    tsv = score_manifest(args.manifest, args.out / "score_manifest", args.score_train)
    layers = load_model(args.iter1).cfg.encoder_layers
    if "iter1" not in results.get("layers", {}):
        start = time.time()
        results.setdefault("layers", {})["iter1"] = layer_pnmi(args.iter1, layers, tsv, args.out / "score" / "iter1",
                                                              [args.measure_k], args.alignments)[str(args.measure_k)]
        results.setdefault("minutes", {})["score_iter1"] = (time.time() - start) / 60
        save()
    best = max(results["layers"]["iter1"], key=results["layers"]["iter1"].get)
    results["label_layer"] = int(best)
    labels = args.out / "labelling" / "labels"
    if "labels" not in results.get("minutes", {}):
        start = time.time()
        layer_labels(args.iter1, int(best), args.k, args.manifest, args.out / "labelling", label_splits=("train", "valid"),
                     jobs=2, seed=args.seed, progress=True)
        make_dict(labels)
        results["minutes"]["labels"] = (time.time() - start) / 60
        save()
    for arm in args.arms.split(","):
        if arm not in ARMS:
            raise SystemExit(f"--arms: {arm!r} is not one of {ARMS}")
        if arm in results["layers"]:
            continue
        start = time.time()
        ck = args.out / arm / "checkpoints"
        overrides = [f"task.data={args.manifest.resolve()}", f"task.label_dir={labels.resolve()}",
                     f"checkpoint.save_dir={ck.resolve()}", "model.label_rate=50", f"common.seed={args.seed}",
                     *model_overrides(args.updates, args.every or args.updates)]
        if arm == "warm":
            overrides.append(f"checkpoint.finetune_from_model={args.iter1.resolve()}")
        updates = train("demo", overrides)["num_updates"]
        results["minutes"][f"train_{arm}"] = (time.time() - start) / 60
        start = time.time()
        curve = results.setdefault("curve", {}).setdefault(arm, {})
        for step in range(args.every or args.updates, updates, args.every or args.updates):
            if str(step) not in curve:
                curve[str(step)] = layer_pnmi(next(ck.glob(f"checkpoint_*_{step}.pt")), layers, tsv,
                                              args.out / "score" / arm, [args.measure_k], args.alignments)[str(args.measure_k)]
                save()
        results["layers"][arm] = curve[str(updates)] = layer_pnmi(
            ck / "checkpoint_last.pt", layers, tsv, args.out / "score" / arm, [args.measure_k], args.alignments)[str(args.measure_k)]
        results["minutes"][f"score_{arm}"] = (time.time() - start) / 60
        results.setdefault("trained_updates", {})[arm] = updates
        save()
        print(arm, results["layers"][arm], flush=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
