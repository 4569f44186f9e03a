"""Do better units give better unit-based ASR? The same unit-ASR models trained on
different discrete units of the demo corpus, scored on its valid split.

Each unit source is a label directory (``{split}.km`` in manifest order, e.g. a
pipeline's ``iter1/labels`` from MFCC k-means or ``iter2/labels`` from a HuBERT layer),
or a HuBERT checkpoint with a layer and K (k-means fitted here on the train split). For
each source: its PNMI against the phone alignments, then ``hubertkit/configs/unit_asr/bart_demo``
and the ``ctc_demo`` baseline trained on its deduplicated units with the same budget,
and the valid CER/WER of beam-5 (BART) or greedy (CTC) decoding.

    python experiments/unit_asr_gain.py --manifest demo_out/manifest --out runs/unit_asr_gain \\
        --labels mfcc=demo_out/iter1/labels:100 --labels hubert_iter2=demo_out/iter2/labels:50 \\
        --finetune-results runs/finetune_gain/results.json

Writes ``results.json`` and ``table.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hubertkit.cluster.quality import label_quality
from hubertkit.data.manifest import lookup_by_path
from hubertkit.data.text import normalize_text, read_texts
from hubertkit.data.unit_dataset import read_units
from hubertkit.recipes.discrete_units import save_units, units_from_labels
from hubertkit.recipes.demo import DEMO_CORPUS
from hubertkit.recipes.pipeline import layer_labels
from hubertkit.recipes.transcribe import error_rates
from hubertkit.recipes.unit_asr import train_unit_asr, transcribe_units



def hubert_labels(spec: str, manifest: Path, work: Path) -> tuple[Path, int]:
    """``CKPT:LAYER:K`` → a label directory of k-means (fitted on train) of that layer, at 50 Hz."""
    ckpt, layer, k = spec.rsplit(":", 2)
    return layer_labels(ckpt, int(layer), int(k), manifest, work, label_splits=("train", "valid"), jobs=2), 50


def train_texts(train: Path, texts: Path) -> set[str]:
    table = read_texts(texts)
    return {normalize_text(lookup_by_path(table, r["utt"], "text", str(texts))) for r in read_units(train)}


def arm(config: str, train: Path, valid: Path, save: Path, updates: int, rate: int, texts: Path) -> dict:
    start = time.time()
    result = train_unit_asr(train, texts, valid, config, [f"optimization.max_update={updates}", f"task.label_rate={rate}"],
                            save_dir=save)
    minutes = (time.time() - start) / 60
    out = transcribe_units(result["model"], valid, references=texts, beam=5, progress=False)
    log = [json.loads(l) for l in (save / "train_log.jsonl").read_text().splitlines()]
    curve = [(r["update"], r["uer"]) for r in log if r["split"] == "valid"]
    return {**error_rates(out), "unseen_text": error_rates(out, exclude=train_texts(train, texts)), "minutes": minutes, "valid_uer": curve,
            "examples": [{"reference": t.reference, "hypothesis": t.text} for t in out[:3]]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, required=True, help="directory of train.tsv and valid.tsv")
    parser.add_argument("--out", type=Path, default=Path("runs/unit_asr_gain"))
    parser.add_argument("--alignments", type=Path, default=DEMO_CORPUS / "alignments.jsonl",
                        help="transcripts and phone alignments of the manifest's utterances (default: the demo corpus's)")
    parser.add_argument("--labels", action="append", default=[], metavar="NAME=DIR:RATE",
                        help="a label directory ({split}.km) and its frame rate in Hz; repeatable")
    parser.add_argument("--hubert", action="append", default=[], metavar="NAME=CKPT:LAYER:K",
                        help="units from k-means (K, fitted on train) of a HuBERT layer; repeatable")
    parser.add_argument("--updates", type=int, default=1500, help="updates per unit-ASR model")
    parser.add_argument("--finetune-results", type=Path, default=None,
                        help="results.json of experiments/finetune_gain.py, for its CTC fine-tuned CER")
    args = parser.parse_args()
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
        results[name] = {"pnmi": quality.pnmi, "rate": rate, "labels": str(labels),
                         "bart": arm("bart_demo", train, valid, work / "bart", args.updates, rate, args.alignments),
                         "ctc": arm("ctc_demo", train, valid, work / "ctc", args.updates, rate, args.alignments)}
        print(name, json.dumps({k: results[name][k]["cer"] for k in ("bart", "ctc")}), flush=True)
    finetuned = json.loads(args.finetune_results.read_text())["pretrained"] if args.finetune_results else None
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"sources": results, "finetuned_ctc": finetuned,
                                                       "updates": args.updates}, indent=1) + "\n")
    rows = ["| units | valid PNMI | unit-BART CER | WER | CER, unseen texts | unit-CTC CER | WER | CER, unseen texts |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    rows += [f"| {n} ({r['rate']} Hz) | {r['pnmi']:.3f} | " + " | ".join(
        f"{r[a]['cer']:.3f} | {r[a]['wer']:.3f} | {r[a]['unseen_text']['cer']:.3f}" for a in ("bart", "ctc")) + " |"
        for n, r in results.items()]
    if finetuned:
        unseen = finetuned.get("unseen_text", {}).get("cer")
        rows.append(f"\nFrom audio, CTC fine-tuning of the pretrained model (experiments/finetune_gain.py): "
                    f"CER {finetuned['cer']:.3f}, WER {finetuned['wer']:.3f}"
                    + (f", CER on unseen texts {unseen:.3f}." if unseen is not None else "."))
    (args.out / "table.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
