"""The pipeline's report: ``report.md`` and PNG figures, every number read from the run's
own outputs (quality.json, train_log.jsonl, label files)."""

from __future__ import annotations

import dataclasses
import datetime
import json
import platform
from collections import Counter
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
import yaml

from hubertkit.cluster.quality import joint_counts, paired_frames, shuffled_quality
from hubertkit.data.audio import SAMPLE_RATE
from hubertkit.data.labels import label_path
from hubertkit.data.manifest import manifest_path, read_manifest
from hubertkit.fileio import write_text
from hubertkit.plots import pyplot, save_figure, training_curves
from hubertkit.recipes.probe import plot_probes, read_probes


def quality_bars(qualities: dict[str, dict], png: Path, chance: dict[str, dict] | None = None) -> Path:
    """PNMI, phone purity and cluster purity of the valid labels, per iteration, with the
    same labels shuffled across frames as the chance level."""
    plt = pyplot()
    names = list(qualities)
    metrics = [("pnmi", "PNMI"), ("phone_purity", "phone purity"), ("cluster_purity", "cluster purity")]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / len(metrics)
    for j, (key, label) in enumerate(metrics):
        values = [qualities[n]["valid"][key] for n in names]
        bars = ax.bar(np.arange(len(names)) + j * width, values, width, label=label)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
        for i, n in enumerate(names):
            if chance and n in chance:
                x = i + j * width
                ax.hlines(chance[n][key], x - width / 2, x + width / 2, colors="black", linestyles="--", lw=1,
                          label="chance (labels shuffled)" if i == j == 0 else None)
    ax.set_xticks(np.arange(len(names)) + width, names)
    ax.set(ylabel="valid split", title="label quality per iteration", ylim=(0, 1))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, png)


def cooccurrence_heatmap(phones: list[list[str]], labels: list[list[int]], png: Path, title: str) -> Path:
    """p(phone | cluster) for every cluster, clusters ordered by their most likely phone
    (``phones`` and ``labels`` as ``paired_frames`` gives them)."""
    counts, phone_names, _ = joint_counts(phones, labels)
    order_phones = np.argsort(-counts.sum(1))
    counts = counts[order_phones]
    p = counts / np.maximum(counts.sum(0, keepdims=True), 1)
    order = np.lexsort((-p.max(0), p.argmax(0)))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 6))
    ax.imshow(p[:, order], aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_yticks(range(len(order_phones)), [phone_names[i] for i in order_phones], fontsize=6)
    ax.set(xlabel="cluster (sorted by most likely phone)", ylabel="phone (most frequent first)", title=title)
    fig.tight_layout()
    return save_figure(fig, png)


def _environment() -> str:
    try:
        version = metadata.version("hubertkit")
    except metadata.PackageNotFoundError:
        version = "not installed"
    return (f"hubertkit {version}, torch {torch.__version__}, Python {platform.python_version()}, "
            f"{platform.machine()} {platform.system()}, {torch.get_num_threads()} threads")


def _corpus_lines(tsv_dir: Path) -> list[str]:
    rows = ["| split | utterances | speakers | hours |", "|---|---:|---:|---:|"]
    for split in ("train", "valid"):
        path = manifest_path(tsv_dir, split)
        if path.is_file():
            m = read_manifest(path)
            speakers = Counter(Path(u.path).parent.name for u in m.utterances)
            hours = sum(u.num_samples for u in m.utterances) / SAMPLE_RATE / 3600
            rows.append(f"| {split} | {len(m)} | {len(speakers)} | {hours:.3f} |")
    return rows


def _stage_times(out: Path) -> tuple[list[str], float]:
    records = sorted((out / "stages").glob("*.json"), key=lambda p: p.stat().st_mtime)
    rows, total = ["| stage | seconds |", "|---|---:|"], 0.0
    for r in records:
        seconds = json.loads(r.read_text()).get("seconds", 0.0)
        total += seconds
        rows.append(f"| {r.stem} | {seconds:.0f} |")
    return rows, total


READING = """How to read these numbers:

- **PNMI** (phone-normalised mutual information): the share of the phones' entropy that the
  frame labels explain, I(phone; label) / H(phone), on the valid split against the phone
  alignments. 0: the labels say nothing about the phones; 1: they determine them.
  **Phone purity**: how often a cluster's most frequent phone is the frame's phone.
  **Cluster purity**: how often a phone's most frequent cluster is the frame's cluster.
  *Chance* is the same labels shuffled across frames: what K clusters of these sizes
  score with no relation to the phones (not 0 for PNMI on a finite sample).
- **ABX error** (docs/abx.md): how often a phone token is closer (DTW over frames, angular
  distance) to a token of another phone than to one of its own, in the same context,
  within one speaker or across two; 50 % is chance, lower is better. On a valid split of
  a few utterances (the demo's) it rests on a handful of phone contrasts: read it there as
  a check that the measure runs, not as a score.
- **Training**: the loss is the masked frames' cross-entropy in bits; the accuracy is
  how often the masked frame's label is predicted. Guessing uniformly gets 1/K.
- **What to expect at this budget**: the demo trains a 3-layer model for a few hundred
  updates on minutes of speech, in minutes on a CPU. It shows the recipe's mechanics
  (every stage, file and number, and resuming), not HuBERT's gain: iteration 2's labels,
  from a model this small trained this briefly, are expected to score *below* the MFCC
  labels of iteration 1. The gain needs more training: on real speech, the layers of a
  4 x 192 model beat MFCC labels after about 1,000 updates on 2,200 utterances
  (docs/real_speech.md, 3 seeds).
- The values depend on floating-point details of the machine (thread count, CPU): a
  re-run on the same machine with the same thread count gives the same numbers, while
  another thread count or CPU moves the trained models' scores about as much as another
  seed does. On the demo (docs/pipeline.md, measured): iteration 2's PNMI moves by up to
  0.03 between seeds; a unit-ASR model that has not learnt the task moves its CER by up
  to 0.15 between seeds on the same units, and by 0.2 between machines.
"""


def write_report(cfg) -> Path:
    out = Path(cfg.out)
    tsv = out / "manifest"
    time_rows, total = _stage_times(out)
    lines = ["# hubertkit pipeline report", "",
             f"Corpus `{cfg.corpus}`, output `{out}`, written {datetime.datetime.now():%Y-%m-%d %H:%M}; "
             f"{_environment()}; the stages took {total / 60:.1f} minutes in all (table at the end).", "",
             *_corpus_lines(tsv), "", READING, "## Label quality and training", ""]
    qualities, chance = {}, {}
    lines += ["| iteration | features | K | label rate | valid PNMI (chance) | valid phone purity (chance) "
              "| valid cluster purity (chance) | updates | last train loss | last train acc (masked) "
              "| last valid acc (masked) | uniform guess |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    figures, choices = [], []
    for it in cfg.iterations:
        d = out / it.name
        qfile = d / "quality.json"
        q = json.loads(qfile.read_text()) if qfile.is_file() else None
        if q:  # scored against cfg.alignments, so they exist
            qualities[it.name] = q
            pairs = paired_frames(label_path(d / "labels", "valid"), cfg.alignments, manifest_path(tsv, "valid"),
                                  it.label_rate)
            chance[it.name] = shuffled_quality(*pairs).as_dict()
        log_path = d / "checkpoints" / "train_log.jsonl"
        records = [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.is_file() else []
        train = [r for r in records if r["split"] == "train"]
        valid = [r for r in records if r["split"] == "valid"]
        choice = json.loads((d / "layer_choice.json").read_text()) if it.layer == "auto" and (d / "layer_choice.json").is_file() else None
        if choice:
            by = "the valid PNMI of k-means" if choice["metric"] == "pnmi" else "the valid ABX error (mean of within and across)"
            choices.append(f"{it.name}'s layer was chosen by {by} on each layer of the previous model: " + ", ".join(
                f"layer {k} PNMI {v:.3f} (K={choice['k']}), ABX within / across {_abx_cell(choice['valid_abx'][k])} %"
                for k, v in choice["valid_pnmi"].items()) + f"; layer {choice['chosen']} was taken.")
        layer = f"{choice['chosen']} (auto)" if choice else it.layer
        feats = "MFCC" if it.features == "mfcc" else f"layer {layer} of the previous model"
        qv, cv = (q["valid"], chance[it.name]) if q else ({}, {})

        def fmt(v):
            return f"{v:.4f}" if isinstance(v, float) else "–"

        def with_chance(key):
            return f"{fmt(qv.get(key))} ({fmt(cv.get(key))})" if q else "–"

        lines.append(
            f"| {it.name} | {feats} | {it.n_clusters} | {it.label_rate:g} | {with_chance('pnmi')} "
            f"| {with_chance('phone_purity')} | {with_chance('cluster_purity')} "
            f"| {train[-1]['update'] if train else '–'} | {fmt(train[-1]['loss'] if train else None)} "
            f"| {fmt(train[-1].get('acc_m_0') if train else None)} | {fmt(valid[-1].get('acc_m_0') if valid else None)} "
            f"| {1 / it.n_clusters:.4f} |"
        )
        if records:
            png = training_curves(log_path, out / f"training_{it.name}.png", f"{it.name}: training curves")
            figures.append((f"Training curves, {it.name}", png))
        if q:
            png = cooccurrence_heatmap(*pairs[:2], out / f"phone_cluster_{it.name}.png",
                                       f"{it.name}: p(phone | cluster), valid split")
            figures.append((f"Phone × cluster co-occurrence, {it.name}", png))
    if qualities:
        figures.insert(0, ("Label quality per iteration", quality_bars(qualities, out / "label_quality.png", chance)))
        lines += ["", _verdict(qualities, chance)]
    lines += [f"\n{c}" for c in choices]
    lines += [""]
    lines += disentangle_section(out / "disentangled" / "probe", figures)
    lines += unit_asr_section(cfg, qualities)
    for caption, png in figures:
        lines += [f"## {caption}", "", f"![{caption}]({png.relative_to(out).as_posix()})", ""]
    lines += ["## Time per stage", "", "Seconds of each stage when it last ran (a resumed run keeps earlier stages' times).",
              "", *time_rows, "", "## Config", "",
              "The pipeline config as run (each iteration's training config is named with its overrides; "
              "`hubertkit train --config-name NAME` shows it in `configs/`):", "", "```yaml",
              yaml.safe_dump(json.loads(json.dumps(dataclasses.asdict(cfg), default=str)), sort_keys=False).rstrip(),
              "```", ""]
    report = out / "report.md"
    write_text(report, "\n".join(lines) + "\n")
    return report


def _abx_cell(scores: dict) -> str:
    """ABX error rates as "within / across" percentages."""
    return " / ".join(f"{100 * v:.1f}" for _, v in sorted(scores.items(), reverse=True))


def _verdict(qualities: dict, chance: dict) -> str:
    """One sentence on the PNMI ordering, against chance."""
    pnmi = {n: q["valid"]["pnmi"] for n, q in qualities.items()}
    parts = [f"{n} {v:.3f} (chance {chance[n]['pnmi']:.3f})" for n, v in pnmi.items()]
    names = list(pnmi)
    text = "Valid PNMI: " + ", ".join(parts) + "."
    if len(names) > 1:
        first, last = names[0], names[-1]
        text += (f" {last}'s labels score above {first}'s." if pnmi[last] > pnmi[first] else
                 f" {last}'s labels score below {first}'s, as expected at this budget (see above).")
    return text


def unit_asr_section(cfg, qualities: dict) -> list[str]:
    """Unit-based ASR per iteration's units, beside the units' PNMI (the pipeline's
    unit_asr stages)."""
    out = Path(cfg.out) / "unit_asr"
    scores = {it.name: json.loads((out / it.name / "scores.json").read_text()) for it in cfg.iterations
              if (out / it.name / "scores.json").is_file()}
    if not scores:
        return []
    lines = ["## Unit-based ASR", "",
             f"Each iteration's labels as units (repeats collapsed), a `{cfg.unit_asr.train_config}` unit-to-text model "
             f"trained on the train split's, scored on valid (beam {cfg.unit_asr.beam}). CER and WER: letter and word "
             "edits per reference letter and word; a model that writes nothing scores 1.0.", "",
             "| units | valid PNMI | updates | valid CER | valid WER |", "|---|---:|---:|---:|---:|"]
    for name, r in scores.items():
        pnmi = qualities.get(name, {}).get("valid", {}).get("pnmi")
        pnmi_text = f"{pnmi:.4f}" if pnmi is not None else "–"
        lines.append(f"| {name} labels | {pnmi_text} | {r['updates']} | {r['cer']:.3f} | {r['wer']:.3f} |")
    untrained = [name for name, r in scores.items() if r["wer"] >= 1.0]
    if untrained:
        names = " and ".join([", ".join(untrained[:-1]), untrained[-1]] if len(untrained) > 1 else untrained)
        one = len(untrained) == 1
        lines += ["", f"The unit-ASR {'model' if one else 'models'} of {names} {'makes' if one else 'make'} at least as many "
                  "word errors as there are reference words (WER >= 1). A model that has not learnt the task has a CER "
                  "that another seed or thread count moves more than the units do: the table shows that the stage "
                  "runs, not which units are better (docs/unit_asr.md)."]
    return lines + [""]


def disentangle_section(probe_dir: Path, figures: list) -> list[str]:
    """Plain and disentangled models side by side: probes per layer, PNMI at the
    adversary's layer (from the pipeline's disentangle.probe stage)."""

    summary_path = probe_dir / "summary.json"
    if not summary_path.is_file():
        return []
    summary = json.loads(summary_path.read_text())
    runs = {name: read_probes(probe_dir / name / "probe.json") for name in ("plain", "disentangled")}

    def cell(v):
        return "–" if v is None else f"{v:.3f}"

    layer = summary["speaker_layer"]
    lines = ["## Disentangling", "",
             f"Both models train on {summary['iteration']}'s labels with the same budget; the disentangled one adds "
             f"a speaker adversary (gradient reversal) on layer {layer} and a pitch output. Linear probes on frozen "
             "features: speaker accuracy (utterance means, 5-fold cross-validated), phone accuracy (frames; fitted on "
             "train, scored on valid), log-F0 correlation (voiced valid frames). Chance: always answering the most "
             "frequent speaker or phone. One run of each model: differences of a few points between the two are "
             "within what another seed gives (docs/disentangle.md).", "",
             "| layer | speaker acc, plain | speaker acc, disentangled | phone acc, plain | phone acc, disentangled "
             "| F0 corr, plain | F0 corr, disentangled | ABX within / across (%), plain | ABX within / across (%), "
             "disentangled |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def abx_cell(r):
        return " / ".join("–" if v is None else f"{100 * v:.1f}" for v in (r.abx_within, r.abx_across))

    for a, b in zip(runs["plain"], runs["disentangled"]):
        mark = " (adversary)" if a.layer == layer else ""
        lines.append(f"| {a.layer}{mark} | {cell(a.speaker_acc)} | {cell(b.speaker_acc)} | {cell(a.phone_acc)} "
                     f"| {cell(b.phone_acc)} | {cell(a.f0_corr)} | {cell(b.f0_corr)} | {abx_cell(a)} | {abx_cell(b)} |")
    first = runs["plain"][0]
    lines.append(f"| chance | {cell(first.speaker_chance)} | {cell(first.speaker_chance)} | {cell(first.phone_chance)} "
                 f"| {cell(first.phone_chance)} | 0 | 0 | 50 / 50 | 50 / 50 |")
    if summary.get("pnmi"):
        lines += ["", f"Valid PNMI of k-means (K as the iteration's) on layer {layer}: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in summary["pnmi"].items()) + "."]
    png = probe_dir / "probes.png"
    plot_probes(runs, png)
    figures.append(("Probes per layer, plain and disentangled", png))
    return lines + [""]
