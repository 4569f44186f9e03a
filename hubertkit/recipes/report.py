"""The pipeline's report: ``report.md`` and PNG figures, every number read from the run's
own outputs (quality.json, train_log.jsonl, label files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hubertkit.cluster.quality import joint_counts, paired_frames
from hubertkit.fileio import write_text
from hubertkit.plots import pyplot, save_figure, training_curves
from hubertkit.recipes.probe import plot_probes, read_probes


def quality_bars(qualities: dict[str, dict], png: Path) -> Path:
    """PNMI, phone purity and cluster purity of the valid labels, per iteration."""
    plt = pyplot()
    names = list(qualities)
    metrics = [("pnmi", "PNMI"), ("phone_purity", "phone purity"), ("cluster_purity", "cluster purity")]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / len(metrics)
    for j, (key, label) in enumerate(metrics):
        values = [qualities[n]["valid"][key] for n in names]
        bars = ax.bar(np.arange(len(names)) + j * width, values, width, label=label)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(np.arange(len(names)) + width, names)
    ax.set(ylabel="valid split", title="label quality per iteration", ylim=(0, 1))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, png)


def cooccurrence_heatmap(lab_file: Path, alignments: str, rate: float, tsv: Path, png: Path, title: str) -> Path:
    """p(phone | cluster) for every cluster, clusters ordered by their most likely phone."""

    phones, labels, _ = paired_frames(lab_file, alignments, tsv, rate)
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


def write_report(cfg) -> Path:
    out = Path(cfg.out)
    lines = ["# hubertkit pipeline report", "", f"Corpus: `{cfg.corpus}`; output: `{out}`.", ""]
    qualities = {}
    lines += ["| iteration | features | K | label rate | valid PNMI | valid phone purity | valid cluster purity "
              "| updates | last train loss | last train acc (masked) | last valid acc (masked) |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    figures = []
    for it in cfg.iterations:
        d = out / it.name
        qfile = d / "quality.json"
        q = json.loads(qfile.read_text()) if qfile.is_file() else None
        if q:
            qualities[it.name] = q
        log_path = d / "checkpoints" / "train_log.jsonl"
        records = [json.loads(l) for l in log_path.read_text().splitlines()] if log_path.is_file() else []
        train = [r for r in records if r["split"] == "train"]
        valid = [r for r in records if r["split"] == "valid"]
        feats = "MFCC" if it.features == "mfcc" else f"layer {it.layer} of the previous model"
        qv = q["valid"] if q else {}

        def fmt(v):
            return f"{v:.4f}" if isinstance(v, float) else "–"

        lines.append(
            f"| {it.name} | {feats} | {it.n_clusters} | {it.label_rate:g} | {fmt(qv.get('pnmi'))} | {fmt(qv.get('phone_purity'))} "
            f"| {fmt(qv.get('cluster_purity'))} | {train[-1]['update'] if train else '–'} | {fmt(train[-1]['loss'] if train else None)} "
            f"| {fmt(train[-1].get('acc_m_0') if train else None)} | {fmt(valid[-1].get('acc_m_0') if valid else None)} |"
        )
        if records:
            png = training_curves(log_path, out / f"training_{it.name}.png", f"{it.name}: training curves")
            figures.append((f"Training curves, {it.name}", png))
        if q and cfg.alignments:
            png = cooccurrence_heatmap(d / "labels" / "valid.km", cfg.alignments, it.label_rate, out / "manifest" / "valid.tsv",
                                       out / f"phone_cluster_{it.name}.png", f"{it.name}: p(phone | cluster), valid split")
            figures.append((f"Phone × cluster co-occurrence, {it.name}", png))
    if qualities:
        figures.insert(0, ("Label quality per iteration", quality_bars(qualities, out / "label_quality.png")))
    lines += ["", "Loss in bits per masked frame; accuracies are frame accuracies of the masked-prediction task.", ""]
    lines += disentangle_section(out / "disentangled" / "probe", figures)
    lines += unit_asr_section(cfg, qualities)
    for caption, png in figures:
        lines += [f"## {caption}", "", f"![{caption}]({png.relative_to(out).as_posix()})", ""]
    report = out / "report.md"
    write_text(report, "\n".join(lines) + "\n")
    return report


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
             f"trained on the train split's, scored on valid (beam {cfg.unit_asr.beam}).", "",
             "| units | valid PNMI | updates | valid CER | valid WER |", "|---|---:|---:|---:|---:|"]
    for name, r in scores.items():
        pnmi = qualities.get(name, {}).get("valid", {}).get("pnmi")
        pnmi_text = f"{pnmi:.4f}" if pnmi is not None else "–"
        lines.append(f"| {name} labels | {pnmi_text} | {r['updates']} | {r['cer']:.3f} | {r['wer']:.3f} |")
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
             "train, scored on valid), log-F0 correlation (voiced valid frames).", "",
             "| layer | speaker acc, plain | speaker acc, disentangled | phone acc, plain | phone acc, disentangled "
             "| F0 corr, plain | F0 corr, disentangled |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for a, b in zip(runs["plain"], runs["disentangled"]):
        mark = " (adversary)" if a.layer == layer else ""
        lines.append(f"| {a.layer}{mark} | {cell(a.speaker_acc)} | {cell(b.speaker_acc)} | {cell(a.phone_acc)} "
                     f"| {cell(b.phone_acc)} | {cell(a.f0_corr)} | {cell(b.f0_corr)} |")
    if summary.get("pnmi"):
        lines += ["", f"Valid PNMI of k-means (K as the iteration's) on layer {layer}: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in summary["pnmi"].items()) + "."]
    png = probe_dir / "probes.png"
    plot_probes(runs, png)
    figures.append(("Probes per layer, plain and disentangled", png))
    return lines + [""]
