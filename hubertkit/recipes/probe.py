"""What each layer of a frozen model encodes, read off with linear probes: speaker
identity (from utterance means), the phone at each frame, and F0.

A linear probe fitted on one split and scored on another is the standard yardstick
(SUPERB's layer analysis, the disentangling literature): a layer from which a linear
map recovers the speaker well carries the speaker. Probes here are deliberately simple
and deterministic: standardised features, a softmax (or least-squares) layer with a
small L2 penalty, full-batch L-BFGS.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hubertkit.cluster.abx import abx_error_rates, items_from_alignments
from hubertkit.data.alignments import frame_phones, read_alignments
from hubertkit.data.audio import SAMPLE_RATE, read_audio
from hubertkit.data.manifest import manifest_path, read_manifest
from hubertkit.data.speakers import read_speaker_map, utterance_speakers
from hubertkit.errors import HubertkitError
from hubertkit.features.pitch import track_pitch
from hubertkit.fileio import write_text
from hubertkit.model.io import load_model
from hubertkit.plots import pyplot, save_figure
from hubertkit.progress import progress_bar

L2 = 1e-4  # on standardised features: a light touch that keeps L-BFGS well-posed
SPEAKER_FOLDS = 5


@dataclass
class LayerProbe:
    layer: int  # 0: the encoder's input (projected CNN features)
    speaker_acc: float | None = None  # utterance-level speaker identification, cross-validated
    phone_acc: float | None = None  # frame-level phone classification, test split
    f0_corr: float | None = None  # Pearson r of predicted and true log-F0, voiced test frames
    # chance: the accuracy of always answering the most frequent speaker / the train split's most frequent phone
    speaker_chance: float | None = None
    phone_chance: float | None = None
    abx_within: float | None = None  # ABX error rates on the test split (cluster/abx.py), with alignments
    abx_across: float | None = None


# -- linear probes ----------------------------------------------------------------------


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = train.mean(0), train.std(0) + 1e-5
    return torch.from_numpy((train - mean) / std).float(), torch.from_numpy((test - mean) / std).float()


def linear_classifier_accuracy(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                               max_iter: int = 200) -> float:
    """Accuracy on the test set of a softmax regression fitted on the train set; test
    items whose class the train set lacks count as errors."""
    classes, y_idx = np.unique(y_train, return_inverse=True)
    xtr, xte = _standardise(x_train, x_test)
    ytr = torch.from_numpy(y_idx)
    weight = torch.zeros(xtr.shape[1], len(classes), requires_grad=True)
    bias = torch.zeros(len(classes), requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xtr @ weight + bias, ytr) + L2 * weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        predicted = classes[(xte @ weight + bias).argmax(1).numpy()]
    return float((predicted == y_test).mean())


def cross_validated_accuracy(x: np.ndarray, y: np.ndarray, folds: int, rng: np.random.Generator) -> float:
    """Mean held-out accuracy over ``folds`` folds of the items (utterances)."""
    fold = rng.permutation(len(x)) % folds
    correct = 0.0
    for f in range(folds):
        test = fold == f
        correct += linear_classifier_accuracy(x[~test], y[~test], x[test], y[test]) * test.sum()
    return float(correct / len(x))


def linear_regression_corr(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> float:
    """Pearson correlation between ridge-regression predictions and the test targets."""
    xtr, xte = (torch.cat([t.double(), torch.ones(len(t), 1, dtype=torch.float64)], 1) for t in _standardise(x_train, x_test))
    gram = xtr.T @ xtr + L2 * len(xtr) * torch.eye(xtr.shape[1], dtype=torch.float64)
    coef = torch.linalg.solve(gram, xtr.T @ torch.from_numpy(y_train).double())
    predicted = (xte @ coef).numpy()
    return float(np.corrcoef(predicted, y_test)[0, 1])


# -- features of a split ----------------------------------------------------------------


@dataclass
class _Split:
    layers: list[list[np.ndarray]]  # [layer][utterance] -> [frames, dim]
    keys: list[str]  # each utterance's path without extension, as alignments name it
    speakers: list[str]
    phones: list[list[str] | None]
    pitch: list[np.ndarray]


@torch.inference_mode()
def _encode(model, tsv: Path, alignments: dict | None, speaker_map: dict | None, max_utterances: int | None,
            progress: bool) -> _Split:
    """Every layer's frames of the split (at most ``max_utterances``, evenly spread over
    the manifest: all layers are kept in memory)."""

    manifest = read_manifest(tsv)
    chosen = np.arange(len(manifest))
    if max_utterances and len(chosen) > max_utterances:
        chosen = np.linspace(0, len(chosen) - 1, max_utterances).round().astype(int)
    speakers = utterance_speakers(tsv, speaker_map)
    rate = SAMPLE_RATE / model.cfg.downsample
    out = _Split([[] for _ in range(model.cfg.encoder_layers + 1)], [], [speakers[i] for i in chosen], [], [])
    utts = [manifest.utterances[i] for i in chosen]
    for utt in progress_bar(utts, desc=f"probe {tsv.stem}", unit="utt", disable=not progress):
        wav = read_audio(utt, where=str(tsv))
        x = model.prepare(torch.from_numpy(wav)[None])
        states = model.hidden_states(x)
        for store, h in zip(out.layers, states):
            store.append(h[0].float().numpy())
        frames = states[0].shape[1]
        key = utt.key
        out.keys.append(key)
        out.phones.append(frame_phones(alignments[key], frames, rate) if alignments and key in alignments else None)
        pitch = track_pitch(wav, rate)
        out.pitch.append(np.pad(pitch, ((0, max(0, frames - len(pitch))), (0, 0)))[:frames])
    return out


def _frames(split: _Split, layer: int, max_frames: int | None, rng: np.random.Generator):
    """Frames with phones (and the phones), frames that are voiced (and log-F0)."""
    feats = split.layers[layer]
    with_phones = [i for i, p in enumerate(split.phones) if p is not None]
    x_ph = np.concatenate([feats[i] for i in with_phones]) if with_phones else None
    y_ph = np.concatenate([np.asarray(split.phones[i]) for i in with_phones]) if with_phones else None
    voiced = [p[:, 1] > 0 for p in split.pitch]
    x_f0 = np.concatenate([f[v] for f, v in zip(feats, voiced)])
    y_f0 = np.log(np.concatenate([p[v, 0] for p, v in zip(split.pitch, voiced)]))
    if max_frames and x_ph is not None and len(x_ph) > max_frames:
        keep = rng.choice(len(x_ph), max_frames, replace=False)
        x_ph, y_ph = x_ph[keep], y_ph[keep]
    if max_frames and len(x_f0) > max_frames:
        keep = rng.choice(len(x_f0), max_frames, replace=False)
        x_f0, y_f0 = x_f0[keep], y_f0[keep]
    return x_ph, y_ph, x_f0, y_f0


def probe_layers(
    ckpt: str | os.PathLike,
    tsv_dir: str | os.PathLike,
    train_split: str = "train",
    test_split: str = "valid",
    layers: list[int] | None = None,
    alignments: str | os.PathLike | None = None,
    speaker_map: str | os.PathLike | None = None,
    max_frames: int | None = 100_000,
    max_utterances: int | None = 1000,
    trust_pickle: bool = False,
    progress: bool = True,
    seed: int = 0,
) -> list[LayerProbe]:
    """Fit the phone and F0 probes on ``train_split``'s frozen features and score them on
    ``test_split``; the speaker probe is cross-validated over the utterances of both.
    Phones need ``alignments``; speakers come from ``speaker_map`` or the paths. At most
    ``max_utterances`` per split are encoded, and ``max_frames`` fit a frame probe."""

    model = load_model(ckpt, trust_pickle)
    n_layers = model.cfg.encoder_layers
    layers = list(range(n_layers + 1)) if layers is None else layers
    bad = [l for l in layers if not 0 <= l <= n_layers]
    if bad:
        raise HubertkitError(f"layers must be in 0..{n_layers} (0: the encoder's input), got {bad}")
    align = read_alignments(alignments) if alignments else None
    table = read_speaker_map(speaker_map) if speaker_map else None
    tr, te = (_encode(model, manifest_path(tsv_dir, s), align, table, max_utterances, progress) for s in (train_split, test_split))
    if len(set(tr.speakers)) < 2:
        raise HubertkitError(f"{train_split} has {len(set(tr.speakers))} speaker(s): a speaker probe needs at least 2")
    rng = np.random.default_rng(seed)
    speakers = np.array(tr.speakers + te.speakers)
    chance = {"speaker_chance": float(np.unique(speakers, return_counts=True)[1].max() / len(speakers))}
    train_phones, test_phones = ([p for p in s.phones if p is not None] for s in (tr, te))
    if train_phones and test_phones:  # the train split's commonest phone, said of every test frame
        names, counts = np.unique(np.concatenate(train_phones), return_counts=True)
        chance["phone_chance"] = float(np.mean(np.concatenate(test_phones) == names[counts.argmax()]))
    items = _abx_items(te, align) if align else None
    results = []
    for layer in layers:
        probe = LayerProbe(layer, **chance)
        if items is not None:
            abx = _abx(te, layer, items, 16000 / model.cfg.downsample, seed)
            probe.abx_within, probe.abx_across = abx.get("within"), abx.get("across")
        # few utterances per speaker: every utterance of both splits is held out once
        means = np.stack([u.mean(0) for s in (tr, te) for u in s.layers[layer]])
        probe.speaker_acc = cross_validated_accuracy(means, speakers, SPEAKER_FOLDS, np.random.default_rng(seed))
        (xp, yp, xf, yf), (xp_te, yp_te, xf_te, yf_te) = _frames(tr, layer, max_frames, rng), _frames(te, layer, None, rng)
        if xp is not None and xp_te is not None:
            probe.phone_acc = linear_classifier_accuracy(xp, yp, xp_te, yp_te)
        if len(xf) > 1 and len(xf_te) > 1:
            probe.f0_corr = linear_regression_corr(xf, yf, xf_te, yf_te)
        results.append(probe)
    return results


def _abx_items(split: _Split, align: dict):
    """The ABX items of the split's aligned utterances (None when it has none)."""
    aligned = {k: align[k] for k in split.keys if k in align}
    try:
        return items_from_alignments(aligned, dict(zip(split.keys, split.speakers))) if aligned else None
    except HubertkitError:  # no phone between two phones
        return None


def _abx(split: _Split, layer: int, items, rate: float, seed: int) -> dict:
    """ABX error rates of one layer on the split, {} where its items make no triplet."""
    try:
        return abx_error_rates(dict(zip(split.keys, split.layers[layer])), items, rate, modes=None, seed=seed)
    except HubertkitError:
        return {}


# -- reporting --------------------------------------------------------------------------


def probe_table(results: list[LayerProbe], title: str | None = None) -> str:
    def cell(v):
        return "–" if v is None else f"{v:.3f}"

    def percent(v):
        return "–" if v is None else f"{100 * v:.2f}"

    lines = [f"**{title}**", ""] if title else []
    lines += ["| layer | speaker acc | phone acc | F0 corr | ABX within (%) | ABX across (%) |",
              "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.layer} | {cell(r.speaker_acc)} | {cell(r.phone_acc)} | {cell(r.f0_corr)} | {percent(r.abx_within)} "
              f"| {percent(r.abx_across)} |" for r in results]
    return "\n".join(lines) + "\n"


def plot_probes(runs: dict[str, list[LayerProbe]], path: str | os.PathLike) -> None:
    """One panel per probe, one line per model (``runs``: name → results)."""
    plt = pyplot()
    fields = [("speaker_acc", "speaker accuracy"), ("phone_acc", "phone accuracy"), ("f0_corr", "log-F0 correlation")]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, (field, label) in zip(axes, fields):
        for name, results in runs.items():
            pts = [(r.layer, getattr(r, field)) for r in results if getattr(r, field) is not None]
            if pts:
                ax.plot(*zip(*pts), "o-", label=name)
        chance_field = {"speaker_acc": "speaker_chance", "phone_acc": "phone_chance"}.get(field)
        chance = next((getattr(r, chance_field) for rs in runs.values() for r in rs), None) if chance_field else None
        if chance is not None:
            ax.axhline(chance, color="gray", ls="--", lw=1, label="chance (most frequent class)")
        ax.set(xlabel="layer (0: encoder input)", ylabel=label, title=label,
               xticks=sorted({r.layer for results in runs.values() for r in results}))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def write_probes(results: list[LayerProbe], out_dir: str | os.PathLike, name: str = "model") -> dict[str, str]:
    """``probe.json``, ``probe.md`` and ``probe.png`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "probe.json", json.dumps([asdict(r) for r in results], indent=1) + "\n")
    write_text(out / "probe.md", probe_table(results))
    plot_probes({name: results}, out / "probe.png")
    return {k: str(out / f"probe.{k}") for k in ("json", "md", "png")}


def read_probes(path: str | os.PathLike) -> list[LayerProbe]:
    return [LayerProbe(**r) for r in json.loads(Path(path).read_text())]
