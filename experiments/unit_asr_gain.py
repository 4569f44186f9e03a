"""Do better units give better unit-based ASR? The same unit-ASR models trained on
different discrete units of one corpus (the demo's by default), scored on its valid split.

Each unit source is a label directory (``{split}.km`` in manifest order, e.g. a
pipeline's ``iter1/labels`` from MFCC k-means or ``iter2/labels`` from a HuBERT layer),
or a HuBERT checkpoint with a layer and K (k-means fitted here on the train split). For
each source: its PNMI against the phone alignments, then ``hubertkit/configs/unit_asr/bart_demo``
and the ``ctc_demo`` baseline trained on its deduplicated units with the same budget,
and the valid CER/WER of beam-5 (BART) or greedy (CTC) decoding.

    python experiments/unit_asr_gain.py --manifest demo_out/manifest --out runs/unit_asr_gain \\
        --labels mfcc=demo_out/iter1/labels:100 --labels hubert_iter2=demo_out/iter2/labels:50 \\
        --finetune-results runs/finetune_gain/results.json
    python experiments/unit_asr_gain.py --manifest SO_PREP_MANIFEST --alignments SO_PREP/alignments.jsonl \
        --labels mfcc=MFCC_LABELS:100 --labels hubert_l1=L1_LABELS:50 --arms ctc --set common.seed=2 --out runs/ua_s2
    python experiments/unit_asr_gain.py --summarize runs/ua_s1 runs/ua_s2 runs/ua_s3

Writes ``results.json`` and ``table.md`` to ``--out``. A ``--hubert`` source's labels are
written to ``OUT/NAME/hubert/…``: pass that folder as ``--labels`` to the other seeds' runs,
so that every seed trains on the same units.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from seeds_summary import per_run, spread

from hubertkit.cluster.quality import label_quality
from hubertkit.data.manifest import lookup_by_path
from hubertkit.data.text import normalize_text, read_texts
from hubertkit.data.unit_dataset import read_units
from hubertkit.fileio import write_text
from hubertkit.recipes.demo import DEMO_CORPUS
from hubertkit.recipes.discrete_units import save_units, units_from_labels
from hubertkit.recipes.pipeline import layer_labels
from hubertkit.recipes.transcribe import error_rates
from hubertkit.recipes.unit_asr import train_unit_asr, transcribe_units

ARMS = {"bart": "bart_demo", "ctc": "ctc_demo"}


def hubert_labels(spec: str, manifest: Path, work: Path) -> tuple[Path, int]:
    """``CKPT:LAYER:K`` → a label directory of k-means (fitted on train) of that layer, at 50 Hz."""
    ckpt, layer, k = spec.rsplit(":", 2)
    return layer_labels(ckpt, int(layer), int(k), manifest, work, label_splits=("train", "valid"), jobs=2), 50


def train_texts(train: Path, texts: Path) -> set[str]:
    table = read_texts(texts)
    return {normalize_text(lookup_by_path(table, r["utt"], "text", str(texts))) for r in read_units(train)}


def arm(config: str, train: Path, valid: Path, save: Path, updates: int, rate: int, texts: Path,
        extra: list[str]) -> dict:
    start = time.time()
    result = train_unit_asr(train, texts, valid, config,
                            [f"optimization.max_update={updates}", f"task.label_rate={rate}", *extra], save_dir=save)
    minutes = (time.time() - start) / 60
    out = transcribe_units(result["model"], valid, references=texts, beam=5, progress=False)
    log = [json.loads(l) for l in (save / "train_log.jsonl").read_text().splitlines()]
    curve = [(r["update"], r["uer"]) for r in log if r["split"] == "valid"]
    return {**error_rates(out), "unseen_text": error_rates(out, exclude=train_texts(train, texts)), "minutes": minutes, "valid_uer": curve,
            "examples": [{"reference": t.reference, "hypothesis": t.text} for t in out[:3]]}


def summarize(runs: list[Path]) -> str:
    """Per unit source and model: PNMI, CER and WER as mean ± sample sd (min–max) over the
    runs; per run, each source's CER against the first source's."""
    results = [json.loads((r / "results.json").read_text())["sources"] for r in runs]
    names = list(results[0])
    if any(list(r) != names for r in results):
        raise SystemExit(f"the runs used different unit sources: {[list(r) for r in results]}")
    arms = [a for a in ARMS if all(a in r[n] for r in results for n in names)]
    head = ["units", "valid PNMI", *[f"unit-{a.upper()} {m}" for a in arms for m in ("CER", "WER")]]
    rows = [f"{len(runs)} runs: {', '.join(str(r) for r in runs)}", "",
            "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for n in names:
        cells = [spread([r[n]["pnmi"] for r in results])]
        cells += [spread([r[n][a][m] for r in results]) for a in arms for m in ("cer", "wer")]
        rows.append(f"| {n} ({results[0][n]['rate']} Hz) | " + " | ".join(cells) + " |")
    rows.append("")
    for a in arms:
        for n in names[1:]:
            rows.append(per_run(f"unit-{a.upper()}, CER of {names[0]} minus {n}",
                                [r[names[0]][a]["cer"] - r[n][a]["cer"] for r in results]))
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, help="directory of train.tsv and valid.tsv")
    parser.add_argument("--out", type=Path, default=Path("runs/unit_asr_gain"))
    parser.add_argument("--alignments", type=Path, default=DEMO_CORPUS / "alignments.jsonl",
                        help="transcripts and phone alignments of the manifest's utterances (default: the demo corpus's)")
    parser.add_argument("--texts", type=Path, default=None,
                        help="transcripts of every utterance, where the alignments leave some out (default: --alignments)")
    parser.add_argument("--labels", action="append", default=[], metavar="NAME=DIR:RATE",
                        help="a label directory ({split}.km) and its frame rate in Hz; repeatable")
    parser.add_argument("--hubert", action="append", default=[], metavar="NAME=CKPT:LAYER:K",
                        help="units from k-means (K, fitted on train) of a HuBERT layer; repeatable")
    parser.add_argument("--updates", type=int, default=1500, help="updates per unit-ASR model")
    parser.add_argument("--finetune-results", type=Path, default=None,
                        help="results.json of experiments/finetune_gain.py, for its CTC fine-tuned CER")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS),
                        help="which unit-ASR models to train on each source (default: both)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra override for every unit-ASR model (e.g. common.seed=2); repeatable")
    parser.add_argument("--summarize", type=Path, nargs="+", metavar="RUN",
                        help="instead of running: mean and spread over earlier runs' --out folders (one per seed)")
    args = parser.parse_args()
    if args.summarize:
        print(summarize(args.summarize))
        return
    if not args.manifest or not (args.labels or args.hubert):
        parser.error("--manifest and at least one --labels or --hubert are required (or --summarize RUN ...)")
    sources = {}
    for spec in args.labels:
        name, rest = spec.split("=", 1)
        folder, rate = rest.rsplit(":", 1)
        sources[name] = (Path(folder), int(rate))
    for spec in args.hubert:
        name, rest = spec.split("=", 1)
        sources[name] = hubert_labels(rest, args.manifest, args.out / name / "hubert")
    results = {}
    for name, (labels, rate) in sources.items():
        work = args.out / name
        work.mkdir(parents=True, exist_ok=True)
        for s in ("train", "valid"):
            save_units(units_from_labels(args.manifest / f"{s}.tsv", labels / f"{s}.km"), work / f"{s}.jsonl")
        train, valid = work / "train.jsonl", work / "valid.jsonl"
        quality = label_quality(labels / "valid.km", args.alignments, rate, args.manifest / "valid.tsv")
        results[name] = {"pnmi": quality.pnmi, "rate": rate, "labels": str(labels)}
        for a in args.arms:
            results[name][a] = arm(ARMS[a], train, valid, work / a, args.updates, rate, args.texts or args.alignments,
                                   args.set)
        print(name, json.dumps({a: results[name][a]["cer"] for a in args.arms}), flush=True)
    finetuned = json.loads(args.finetune_results.read_text())["pretrained"] if args.finetune_results else None
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "results.json", json.dumps({"sources": results, "finetuned_ctc": finetuned,
                                                       "updates": args.updates, "overrides": args.set}, indent=1) + "\n")
    head = ["units", "valid PNMI", *[f"unit-{a.upper()} {m}" for a in args.arms for m in ("CER", "WER", "CER, unseen texts")]]
    rows = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    rows += [f"| {n} ({r['rate']} Hz) | {r['pnmi']:.3f} | " + " | ".join(
        f"{r[a]['cer']:.3f} | {r[a]['wer']:.3f} | {r[a]['unseen_text']['cer']:.3f}" for a in args.arms) + " |"
        for n, r in results.items()]
    if finetuned:
        unseen = finetuned.get("unseen_text", {}).get("cer")
        rows.append(f"\nFrom audio, CTC fine-tuning of the pretrained model (experiments/finetune_gain.py): "
                    f"CER {finetuned['cer']:.3f}, WER {finetuned['wer']:.3f}"
                    + (f", CER on unseen texts {unseen:.3f}." if unseen is not None else "."))
    write_text(args.out / "table.md", "\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
