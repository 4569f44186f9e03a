"""``hubertkit pipeline CONFIG``: the whole iterative HuBERT recipe as resumable stages.

manifest → for each iteration: features (MFCC, or a layer of the previous iteration's
model) → k-means on train → labels for every split → dictionary → label quality (when
alignments are given) → pretraining; then a report.

Every stage records a digest of its inputs (its settings and the digests of the stages
it reads) in ``OUT/stages/NAME.json`` when it completes. A re-run skips a stage whose
record matches, so a crash anywhere resumes at the stage that failed (and training
resumes from its own ``checkpoint_last.pt``); changing a setting re-runs that stage and
everything downstream of it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from functools import partial
from typing import Callable

import numpy as np

from hubertkit.cluster.kmeans import dump_labels, learn_kmeans
from hubertkit.cluster.quality import label_quality
from hubertkit.config import load_config
from hubertkit.config.pipeline import IterationConfig, PipelineConfig, UnitAsrConfig
from hubertkit.data.audio import SAMPLE_RATE
from hubertkit.data.labels import label_path, make_dict, merge_labels
from hubertkit.data.manifest import make_manifest, manifest_path, read_manifest
from hubertkit.data.speakers import write_speakers
from hubertkit.errors import HubertkitError
from hubertkit.features.dump import dump_mfcc
from hubertkit.features.hubert import dump_hubert
from hubertkit.features.pitch import dump_pitch
from hubertkit.fileio import write_text
from hubertkit.model.io import load_model
from hubertkit.recipes.abx import abx
from hubertkit.recipes.discrete_units import save_units, units_from_labels
from hubertkit.recipes.probe import probe_layers, write_probes
from hubertkit.recipes.report import write_report
from hubertkit.recipes.transcribe import error_rates
from hubertkit.recipes.unit_asr import train_unit_asr, transcribe_units, unit_asr_config
from hubertkit.train.trainer import train

SPLITS = ("train", "valid")


class Stages:
    """Runs named stages once per distinct input digest; prints progress."""

    def __init__(self, out: Path, total: int, until: str | None, log: Callable[[str], None]):
        self.dir = out / "stages"
        self.total, self.until, self.log = total, until, log
        self.count, self.ran, self.start = 0, [], time.time()
        self.stopped = False

    def run(self, name: str, inputs: dict, fn: Callable[[], object], outputs: tuple[Path, ...] = (),
            resumes_in: Path | None = None) -> str:
        """Returns this stage's digest (for the stages that depend on it). The stage is
        skipped only when it ran before with the same inputs and its ``outputs`` are
        still there, unchanged since. ``resumes_in``: a folder the stage resumes from
        (training's checkpoints), kept only while it holds work on the same inputs."""
        if self.stopped:
            raise _Stop
        self.count += 1
        digest = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]
        record = self.dir / f"{name}.json"
        done = _read_record(record, self.log)
        now = _fingerprint(outputs)
        if done.get("digest") == digest and done.get("outputs", now) == now:  # records of older versions lack outputs
            self.log(f"[{self.count}/{self.total}] {name}: done earlier, skipped")
        else:
            if done.get("digest") == digest:
                self.log(f"[{self.count}/{self.total}] {name}: its outputs changed or went missing since it ran; running it again")
            self.log(f"[{self.count}/{self.total}] {name} ...")
            if resumes_in is not None:
                self._claim(resumes_in, digest, name)
            t = time.time()
            try:
                result = fn()
            except HubertkitError as e:
                raise HubertkitError(f"stage {name}: {e}") from None
            self.ran.append(name)
            write_text(record, json.dumps({"digest": digest, "inputs": inputs, "seconds": round(time.time() - t, 1),
                                           "result": str(result) if result is not None else None,
                                           "outputs": _fingerprint(outputs)}, indent=1, default=str) + "\n")
            self.log(f"[{self.count}/{self.total}] {name}: {result if result is not None else 'done'} ({time.time() - t:.0f} s)")
        if self.until and (name == self.until or name.split(".")[0] == self.until and name.endswith(".train")):
            self.stopped = True
        return digest


    def _claim(self, folder: Path, digest: str, name: str) -> None:
        """Make ``folder`` this stage's for ``digest``: work in it from other inputs (or of
        unknown origin) is moved aside to ``FOLDER.stale``, so a stage whose inputs changed
        starts from scratch instead of resuming what the old inputs trained."""
        marker = folder / ".pipeline_stage.json"
        owner = _read_record(marker, self.log).get("digest")
        if folder.is_dir() and any(folder.iterdir()) and owner != digest:
            stale = folder.with_name(folder.name + ".stale")
            shutil.rmtree(stale, ignore_errors=True)
            folder.rename(stale)
            self.log(f"{name}: its inputs changed since {folder} was written; that work is moved to {stale} "
                     "and the stage starts from scratch")
        folder.mkdir(parents=True, exist_ok=True)
        write_text(marker, json.dumps({"stage": name, "digest": digest}) + "\n")


def _read_record(record: Path, log: Callable[[str], None]) -> dict:
    """A stage record, or {} (not done) when it is missing or unreadable."""
    if not record.is_file():
        return {}
    try:
        done = json.loads(record.read_text())
        return done if isinstance(done, dict) else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        log(f"stage record {record} is corrupt; running that stage again")
        return {}


def _fingerprint(paths) -> list:
    """Name, size and modification time of every file under ``paths`` (missing ones as None)."""
    out = []
    for root in map(Path, paths):
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for f in files:
            st = f.stat() if f.is_file() else None
            out.append([str(f), st.st_size if st else None, st.st_mtime_ns if st else None])
    return out


def _listing(files: list) -> str:
    """A digest of audio files (names, sizes, times): new or changed files make a new manifest."""
    return hashlib.sha256(json.dumps(_fingerprint(files)).encode()).hexdigest()[:16]


def _corpus_files(corpus: str, ext: str) -> list[Path]:
    return sorted(Path(corpus).rglob(f"*.{ext.lstrip('.')}")) if Path(corpus).is_dir() else []


class _Stop(Exception):
    pass


def _file_digest(path: Path) -> str:
    if not path.is_file():
        raise HubertkitError(f"manifest {path} does not exist (the pipeline's 'manifest' folder needs train.tsv and valid.tsv)")
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _copy_manifests(given: dict[str, Path], tsv: Path) -> dict[str, int]:
    """Copy the user's manifests into the pipeline's folder, after reading them (bad lines fail here)."""
    counts = {}
    for split, path in given.items():
        counts[split] = len(read_manifest(path))
        write_text(tsv / path.name, path.read_text())
    return counts


def _final_checkpoint(ck: Path) -> Path:
    return ck / "checkpoint_best.pt" if (ck / "checkpoint_best.pt").is_file() else ck / "checkpoint_last.pt"


def _run_disentangle(cfg: PipelineConfig, stages: Stages, trained: dict, tsv: Path, progress: bool) -> None:
    """Pitch and speakers → the disentangled model (the plain one's labels, config and
    budget, plus the variant's keys) → probes of both, and the PNMI of k-means on the
    adversary's layer of each."""

    dis, out = cfg.disentangle, Path(cfg.out)
    feat_dir, d = out / "pitch", out / "disentangled"
    plain_digest, plain_overrides = trained[dis.iteration]
    it = next(i for i in cfg.iterations if i.name == dis.iteration)
    pdig = stages.run("disentangle.pitch", {"manifest": str(tsv), "speaker_map": dis.speaker_map, "nshard": cfg.nshard},
                      partial(_pitch_stage, cfg, tsv, feat_dir, progress))
    overrides = [o for o in plain_overrides if not o.startswith("checkpoint.save_dir=")]
    overrides += [f"checkpoint.save_dir={d / 'checkpoints'}", f"task.feat_dir={feat_dir}", *dis.train_overrides]
    tdig = stages.run("disentangle.train", {"plain": plain_digest, "pitch": pdig, "config": dis.train_config, "overrides": overrides},
                      partial(_train_stage, dis.train_config, overrides, dis.train_config_dir, progress),
                      (d / "checkpoints",), resumes_in=d / "checkpoints")
    stages.run("disentangle.probe", {"train": tdig, "alignments": cfg.alignments},
               partial(_probe_stage, cfg, tsv, it, d, progress))


def _pitch_stage(cfg: PipelineConfig, tsv: Path, feat_dir: Path, progress: bool) -> str:
    for split in SPLITS:
        dump_pitch(tsv, split, cfg.nshard, "all", feat_dir, jobs=cfg.jobs, progress=progress)
    return write_speakers(tsv, list(SPLITS), feat_dir, cfg.disentangle.speaker_map)


def _probe_stage(cfg: PipelineConfig, tsv: Path, it: IterationConfig, d: Path, progress: bool) -> str:
    """Probes of the plain and the disentangled model, and the PNMI at the adversary's layer."""
    models = {"plain": _final_checkpoint(Path(cfg.out) / it.name / "checkpoints"), "disentangled": _final_checkpoint(d / "checkpoints")}
    layer = load_model(models["disentangled"]).cfg.speaker_layer
    summary = {"iteration": it.name, "speaker_layer": layer, "pnmi": {}}
    for name, ckpt in models.items():
        results = probe_layers(ckpt, tsv, alignments=cfg.alignments, speaker_map=cfg.disentangle.speaker_map, progress=progress)
        write_probes(results, d / "probe" / name, name=name)
        if cfg.alignments and layer:
            summary["pnmi"][name] = _layer_pnmi(ckpt, layer, it.n_clusters, tsv, d / "probe" / name / "layer", cfg, progress)
    write_text(d / "probe" / "summary.json", json.dumps(summary, indent=1) + "\n")
    return f"PNMI at layer {layer}: " + ", ".join(f"{k} {v:.3f}" for k, v in summary["pnmi"].items())


def _run_unit_asr(cfg: PipelineConfig, stages: Stages, labelled: dict, tsv: Path, progress: bool) -> None:
    """Per iteration: its labels as units → a unit-ASR model → valid CER and WER."""

    u = cfg.unit_asr
    for it in (i for i in cfg.iterations if i.name in u.iterations):
        stages.run(f"unit_asr.{it.name}", {"labels": labelled[it.name], "texts": u.texts, "config": u.train_config,
                                           "overrides": u.train_overrides, "beam": u.beam},
                   partial(_unit_asr_stage, cfg, tsv, it, progress), resumes_in=Path(cfg.out) / "unit_asr" / it.name)


def _unit_asr_overrides(u: UnitAsrConfig, it: IterationConfig) -> list[str]:
    return [f"task.label_rate={it.label_rate}", *u.train_overrides]


def _unit_asr_stage(cfg: PipelineConfig, tsv: Path, it: IterationConfig, progress: bool) -> str:
    u, d = cfg.unit_asr, Path(cfg.out) / "unit_asr" / it.name
    for split in SPLITS:
        save_units(units_from_labels(manifest_path(tsv, split), label_path(Path(cfg.out) / it.name / "labels", split)),
                   d / f"{split}.jsonl")
    result = train_unit_asr(d / "train.jsonl", u.texts, d / "valid.jsonl", u.train_config, _unit_asr_overrides(u, it),
                            u.train_config_dir, d / "checkpoints", progress=progress)
    scores = error_rates(transcribe_units(result["model"], d / "valid.jsonl", beam=u.beam, references=u.texts,
                                          progress=progress))
    write_text(d / "scores.json", json.dumps({**scores, "updates": result["num_updates"]}, indent=1) + "\n")
    return f"valid CER {scores['cer']:.3f}, WER {scores['wer']:.3f}"


def layer_labels(ckpt, layer: int, k: int, tsv: Path, work: Path, label_splits=("valid",), nshard: int = 1, jobs: int = 1,
                 seed: int = 0, progress: bool = False) -> Path:
    """Labels (``WORK/labels/{split}.km``, 50 Hz) of k-means with ``k`` clusters, fitted
    on the train split's features of one layer of ``ckpt``: an iteration's labelling,
    outside a pipeline."""

    for split in SPLITS:
        dump_hubert(tsv, split, ckpt, layer, nshard, "all", work / "features", jobs=jobs, progress=progress)
    learn_kmeans(work / "features", "train", nshard, work / "kmeans.pt", k, seed=seed, progress=progress)
    for split in label_splits:
        dump_labels(work / "features", split, work / "kmeans.pt", nshard, "all", work / "labels", jobs=jobs, progress=progress)
        merge_labels(work / "labels", split, nshard)
    return work / "labels"


def _layer_pnmi(ckpt: Path, layer: int, k: int, tsv: Path, work: Path, cfg: PipelineConfig, progress: bool) -> float:
    """Valid PNMI of k-means (fitted on train) on one layer of a model, at 50 Hz."""

    labels = layer_labels(ckpt, layer, k, tsv, work, nshard=cfg.nshard, jobs=cfg.jobs, seed=cfg.seed, progress=progress)
    return label_quality(label_path(labels, "valid"), cfg.alignments, 50, manifest_path(tsv, "valid")).pnmi


def _layer_stage(cfg: PipelineConfig, tsv: Path, it: IterationConfig, ckpt: Path, d: Path, progress: bool) -> str:
    """``layer: auto``: on every layer of the previous model, the valid PNMI of k-means
    (the iteration's K) and the valid ABX error rates of the layer's features; the layer
    best by ``layer_metric`` is chosen (``layer_choice.json``, and the report)."""
    pnmi, abx_scores = {}, {}
    for layer in range(1, load_model(ckpt).cfg.encoder_layers + 1):
        work = d / "layer_choice" / f"layer{layer}"
        pnmi[layer] = _layer_pnmi(ckpt, layer, it.n_clusters, tsv, work, cfg, progress)
        abx_scores[layer] = abx(work / "features", tsv, "valid", alignments=cfg.alignments, seed=cfg.seed,
                                modes=None, progress=False)["scores"]["features"]  # across needs 2 speakers
    if it.layer_metric == "abx":
        chosen = min(abx_scores, key=lambda n: float(np.mean(list(abx_scores[n].values()))))
    else:
        chosen = max(pnmi, key=pnmi.get)
    write_text(d / "layer_choice.json", json.dumps({"chosen": chosen, "metric": it.layer_metric, "valid_pnmi": pnmi,
                                                    "valid_abx": abx_scores, "k": it.n_clusters}, indent=1) + "\n")
    return f"layer {chosen} by {it.layer_metric} (valid PNMI " + ", ".join(f"{k}: {v:.3f}" for k, v in pnmi.items()) + ")"


def chosen_layer(it: IterationConfig, d: Path) -> int:
    """The iteration's layer: as configured, or as its layer stage chose."""
    return json.loads((d / "layer_choice.json").read_text())["chosen"] if it.layer == "auto" else it.layer


def _features_stage(cfg: PipelineConfig, tsv: Path, it: IterationConfig, feats: Path, ckpt: Path | None,
                    progress: bool) -> str:
    for split in SPLITS:
        if it.features == "mfcc":
            dump_mfcc(tsv, split, cfg.nshard, "all", feats, jobs=cfg.jobs, progress=progress)
        else:
            dump_hubert(tsv, split, ckpt, chosen_layer(it, feats.parent), cfg.nshard, "all", feats, jobs=cfg.jobs,
                        progress=progress)
    return f"{it.features} features in {feats}"


def _labels_stage(cfg: PipelineConfig, feats: Path, km: Path, lab: Path, progress: bool) -> str:
    for split in SPLITS:  # every split labelled by the train k-means
        dump_labels(feats, split, km, cfg.nshard, "all", lab, jobs=cfg.jobs, progress=progress)
        merge_labels(lab, split, cfg.nshard)
    return make_dict(lab)["path"]


def _quality_stage(cfg: PipelineConfig, tsv: Path, it: IterationConfig, lab: Path, d: Path) -> str:
    if not cfg.alignments:
        return "no alignments given"
    q = {s: label_quality(label_path(lab, s), cfg.alignments, it.label_rate, manifest_path(tsv, s)).as_dict()
         for s in SPLITS}
    write_text(d / "quality.json", json.dumps(q, indent=1) + "\n")
    return f"valid PNMI {q['valid']['pnmi']:.4f}"


def _train_overrides(it: IterationConfig, tsv: Path, d: Path, previous_ckpt: Path | None) -> list[str]:
    overrides = [f"task.data={tsv}", f"task.label_dir={d / 'labels'}", f"checkpoint.save_dir={d / 'checkpoints'}",
                 f"model.label_rate={it.label_rate}", *it.train_overrides]
    if it.init == "previous":  # the previous model's encoder; its label set is replaced when K differs
        overrides.append(f"checkpoint.finetune_from_model={previous_ckpt}")
    return overrides


def _check_training_configs(cfg: PipelineConfig, tsv: Path) -> None:
    """Every training config the pipeline will use, loaded now: an unknown config, key or
    value stops the run before the first stage, not after the dumps and k-means."""
    out = Path(cfg.out)
    plain = {it.name: _train_overrides(it, tsv, out / it.name, out / "previous.pt") for it in cfg.iterations}
    models = {it.name: load_config(it.train_config, plain[it.name], it.train_config_dir).model for it in cfg.iterations}
    for previous, it in zip(cfg.iterations, cfg.iterations[1:]):
        if it.features != "hubert":
            continue
        model = models[previous.name]
        if isinstance(it.layer, int) and it.layer > model.encoder_layers:
            raise HubertkitError(f"iteration {it.name}: layer {it.layer}, but {previous.name}'s model has "
                                 f"{model.encoder_layers} layers")
        rate = SAMPLE_RATE / model.downsample
        if float(it.label_rate) != rate:
            raise HubertkitError(f"iteration {it.name}: label_rate {it.label_rate}, but labels from a layer of "
                                 f"{previous.name}'s model come at its frame rate, {rate:g} Hz: set label_rate: {rate:g}")
    if cfg.disentangle:
        dis = cfg.disentangle
        load_config(dis.train_config, [*plain[dis.iteration], f"task.feat_dir={out / 'pitch'}", *dis.train_overrides],
                    dis.train_config_dir)
    for it in (i for i in cfg.iterations if cfg.unit_asr and i.name in cfg.unit_asr.iterations):
        u = cfg.unit_asr
        load_config(*unit_asr_config(tsv, u.texts, None, u.train_config, _unit_asr_overrides(u, it), u.train_config_dir))


def _train_stage(config: str, overrides: list[str], config_dir: str | None, progress: bool) -> int:
    return train(config, overrides, config_dir, progress=progress)["num_updates"]


STAGES_PER_ITERATION = ("features", "kmeans", "labels", "quality", "train")
DISENTANGLE_STAGES = ("disentangle.pitch", "disentangle.train", "disentangle.probe")


def _extra_stages(cfg: PipelineConfig) -> list[str]:
    """The optional sections' stages, in the order they run."""
    extra = list(DISENTANGLE_STAGES) if cfg.disentangle else []
    return extra + ([f"unit_asr.{n}" for n in cfg.unit_asr.iterations] if cfg.unit_asr else [])


def run_pipeline(cfg: PipelineConfig, until: str | None = None, progress: bool = True,
                 log: Callable[[str], None] = print) -> dict:
    out = Path(cfg.out)
    extra = _extra_stages(cfg)
    per_iteration = [[f"{it.name}.{s}" for s in (("layer",) if it.layer == "auto" else ()) + STAGES_PER_ITERATION]
                     for it in cfg.iterations]
    valid_names = ["manifest"] + [n for names in per_iteration for n in names] + extra
    stages = Stages(out, len(valid_names), until, log)
    valid_names += [it.name for it in cfg.iterations]
    if until is not None and until not in valid_names:
        raise HubertkitError(f"--until {until!r} is not a stage; stages: {', '.join(valid_names)}")
    _check_training_configs(cfg, out / "manifest")
    trained: dict[str, tuple[str, list[str]]] = {}  # iteration -> (train digest, overrides)
    labelled: dict[str, str] = {}  # iteration -> labels digest
    tsv = out / "manifest"
    results: dict = {"iterations": {}}
    try:
        if cfg.manifest:  # the user's split, copied (its content is the stage's input)
            given = {s: manifest_path(cfg.manifest, s) for s in SPLITS}
            inputs = {s: _file_digest(p) for s, p in given.items()}  # and the audio they list, as it is now
            inputs["audio"] = _listing([u.path for p in given.values() for u in read_manifest(p).utterances])
            prev = stages.run("manifest", inputs, partial(_copy_manifests, given, tsv), (tsv,))
        else:
            prev = stages.run("manifest", {"corpus": cfg.corpus, "ext": cfg.ext, "valid_percent": cfg.valid_percent, "seed": cfg.seed,
                                           "files": _listing(_corpus_files(cfg.corpus, cfg.ext))},
                              partial(make_manifest, cfg.corpus, tsv, cfg.ext, cfg.valid_percent, cfg.seed), (tsv,))
        previous_ckpt, previous_train = None, None
        for it in cfg.iterations:
            d = out / it.name
            feats, km, lab, ck = d / "features", d / "kmeans.pt", d / "labels", d / "checkpoints"
            layer = it.layer
            if it.layer == "auto":
                layer = stages.run(f"{it.name}.layer", {"manifest": prev, "model": previous_train, "k": it.n_clusters,
                                                        "metric": it.layer_metric,
                                                        "alignments": cfg.alignments, "seed": cfg.seed, "nshard": cfg.nshard},
                                   partial(_layer_stage, cfg, tsv, it, previous_ckpt, d, progress), (d / "layer_choice.json",))
            fdig = stages.run(f"{it.name}.features", {"manifest": prev, "features": it.features, "layer": layer,
                                                      "model": previous_train, "nshard": cfg.nshard},
                              partial(_features_stage, cfg, tsv, it, feats, previous_ckpt, progress), (feats,))
            kdig = stages.run(f"{it.name}.kmeans", {"features": fdig, "k": it.n_clusters, "percent": it.kmeans_percent, "seed": cfg.seed},
                              partial(learn_kmeans, feats, "train", cfg.nshard, km, it.n_clusters, percent=it.kmeans_percent,
                                      seed=cfg.seed, progress=progress), (km,))
            ldig = labelled[it.name] = stages.run(f"{it.name}.labels", {"kmeans": kdig},
                                                  partial(_labels_stage, cfg, feats, km, lab, progress), (lab,))
            stages.run(f"{it.name}.quality", {"labels": ldig, "alignments": cfg.alignments, "rate": it.label_rate},
                       partial(_quality_stage, cfg, tsv, it, lab, d), (d / "quality.json",) if cfg.alignments else ())
            overrides = _train_overrides(it, tsv, d, previous_ckpt)
            previous_train = stages.run(f"{it.name}.train", {"labels": ldig, "config": it.train_config, "overrides": overrides,
                                                             "init": previous_train if it.init == "previous" else None},
                                        partial(_train_stage, it.train_config, overrides, it.train_config_dir, progress), (ck,),
                                        resumes_in=ck)
            previous_ckpt = _final_checkpoint(ck)
            results["iterations"][it.name] = str(d)
            trained[it.name] = (previous_train, overrides)
        if cfg.disentangle:
            _run_disentangle(cfg, stages, trained, tsv, progress)
        if cfg.unit_asr:
            _run_unit_asr(cfg, stages, labelled, tsv, progress)
    except _Stop:
        log(f"stopped after {until} (--until)")
        results["stopped"] = until
        return {**results, "ran": stages.ran}

    results["report"] = str(write_report(cfg))
    return {**results, "ran": stages.ran}
