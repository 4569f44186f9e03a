"""Does pretraining help? CTC fine-tuning of a hubertkit-pretrained model against the
same network from random initialisation, with the same budget, on any transcribed corpus.

    python experiments/finetune_gain.py --pretrained runs/iteration_gain/iter1/checkpoints/checkpoint_last.pt \
        --manifest runs/iteration_gain/manifest --out runs/finetune_gain
    python experiments/finetune_gain.py --pretrained experiments/checkpoints/real_iter1.pt --manifest SO_PREP \
        --alignments SO_PREP/texts.tsv --updates 1000 --set common.seed=1 --out runs/ft_real_s1
    python experiments/finetune_gain.py --summarize runs/ft_real_s1 runs/ft_real_s2 runs/ft_real_s3 --plot curves.png

Both arms run ``hubertkit/configs/finetune/demo.yaml`` (plus ``--updates``) on the manifest's
train split, and are scored on its valid split: CER and WER of greedy decoding
(``transcribe`` with ``jiwer``) by each arm's last checkpoint, the model at the budget (a
best checkpoint would be chosen on the same split, and while WER stays near 1 early in
fine-tuning, the choice is noise). Re-running with the same ``--out`` trains nothing
that is finished and scores again. Writes ``results.json``, ``table.md`` and
``finetune_curves.png`` (valid letter error rate against updates) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from seeds_summary import per_run, spread

from hubertkit.data.text import prepare_text
from hubertkit.fileio import write_text
from hubertkit.plots import pyplot, save_figure
from hubertkit.recipes.demo import DEMO_CORPUS
from hubertkit.recipes.transcribe import error_rates, transcribe
from hubertkit.train.trainer import finetune


def arm(name: str, args, texts: Path, extra: list[str]) -> dict:
    save = args.out / name
    overrides = [f"task.data={args.manifest}", f"task.label_dir={texts}", f"model.w2v_path={args.pretrained}",
                 f"checkpoint.save_dir={save}", f"optimization.max_update={args.updates}",
                 "dataset.validate_interval_updates=100", *args.set, *extra]
    finetune("demo", overrides, progress=True)  # resumes, or returns at once if already at the budget
    out = transcribe(save / "checkpoint_last.pt", [str(args.manifest / "valid.tsv")], references=texts / "valid.wrd",
                     progress=False)
    log = [json.loads(l) for l in (save / "train_log.jsonl").read_text().splitlines()]
    minutes = max(r["wall_s"] for r in log if r["split"] == "train") / 60  # of the last (uninterrupted) session
    curve = [(r["update"], r["uer"]) for r in log if r["split"] == "valid"]
    examples = [{"reference": t.reference, "hypothesis": t.text} for t in out[:3]]
    seen = set((texts / "train.wrd").read_text().splitlines())  # normalised, as the references are
    return {**error_rates(out), "unseen_text": error_rates(out, exclude=seen), "minutes": minutes, "valid_uer": curve,
            "examples": examples}


def summarize(runs: list[Path]) -> str:
    """Per arm, CER and WER as mean ± sample sd (min–max) over the runs; the gain per run."""
    results = [json.loads((r / "results.json").read_text()) for r in runs]
    rows = [f"{len(runs)} runs: {', '.join(str(r) for r in runs)}", "",
            "| initialisation | valid CER | valid WER |", "|---|---:|---:|"]
    for arm_name in ("pretrained", "random_init"):
        rows.append(f"| {arm_name} | {spread([r[arm_name]['cer'] for r in results])} "
                    f"| {spread([r[arm_name]['wer'] for r in results])} |")
    gains = [r["random_init"]["cer"] - r["pretrained"]["cer"] for r in results]
    rows += ["", per_run("CER of random init minus pretrained", gains)]
    return "\n".join(rows)


def plot_runs(runs: list[Path], png: Path) -> None:
    """Every run's valid letter error rate against updates, one colour per arm."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, r in enumerate(runs):
        result = json.loads((r / "results.json").read_text())
        for colour, k in (("C0", "pretrained"), ("C1", "random_init")):
            ax.plot(*zip(*result[k]["valid_uer"]), "o-", color=colour, ms=3, alpha=0.7, label=k if i == 0 else None)
    ax.set(xlabel="fine-tuning updates", ylabel="valid letter error rate",
           title=f"CTC fine-tuning, {len(runs)} seeds", ylim=(0, None))
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, png)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", type=Path, help="a pretrained hubertkit checkpoint")
    parser.add_argument("--manifest", type=Path, help="directory of train.tsv and valid.tsv")
    parser.add_argument("--out", type=Path, default=Path("runs/finetune_gain"))
    parser.add_argument("--updates", type=int, default=2000)
    parser.add_argument("--alignments", type=Path, default=DEMO_CORPUS / "alignments.jsonl",
                        help="transcripts of the manifest's utterances (default: the demo corpus's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra fine-tuning override for both arms (e.g. dataset.num_workers=0); repeatable")
    parser.add_argument("--summarize", type=Path, nargs="+", metavar="RUN",
                        help="instead of running: mean and spread over earlier runs' --out folders (one per seed)")
    parser.add_argument("--plot", type=Path, metavar="PNG", help="with --summarize: draw every run's valid curves")
    args = parser.parse_args()
    if args.summarize:
        print(summarize(args.summarize))
        if args.plot:
            plot_runs(args.summarize, args.plot)
        return
    if not (args.pretrained and args.manifest):
        parser.error("--pretrained and --manifest are required (or --summarize RUN ...)")
    texts = args.out / "text"
    prepare_text(args.manifest, ["train", "valid"], texts, args.alignments)
    results = {"pretrained": arm("pretrained", args, texts, []),
               "random_init": arm("random_init", args, texts, ["model.no_pretrained_weights=true"]),
               "updates": args.updates, "checkpoint": str(args.pretrained), "overrides": args.set}
    write_text(args.out / "results.json", json.dumps(results, indent=1) + "\n")
    rows = ["| initialisation | valid CER | valid WER | CER, texts not in train | minutes |", "|---|---:|---:|---:|---:|"]
    rows += [f"| {k} | {results[k]['cer']:.3f} | {results[k]['wer']:.3f} | {results[k]['unseen_text']['cer']:.3f} "
             f"| {results[k]['minutes']:.1f} |"
             for k in ("pretrained", "random_init")]
    write_text(args.out / "table.md", "\n".join(rows) + "\n")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for k in ("pretrained", "random_init"):
        ax.plot(*zip(*results[k]["valid_uer"]), "o-", label=k)
    ax.set(xlabel="fine-tuning updates", ylabel="valid letter error rate", title="CTC fine-tuning")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, args.out / "finetune_curves.png")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
