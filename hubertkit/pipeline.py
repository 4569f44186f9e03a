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

import dataclasses
import difflib
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from hubertkit.config import read_yaml_mapping
from hubertkit.errors import HubertkitError
from hubertkit.fileio import write_text

SPLITS = ("train", "valid")


@dataclass
class IterationConfig:
    name: str
    features: str = "mfcc"  # "mfcc", or "hubert": layer `layer` of the previous iteration's model
    layer: int | None = None
    n_clusters: int = 100
    label_rate: float = 100.0
    kmeans_percent: float = -1.0
    train_config: str = "demo"  # a config name in configs/ (or train_config_dir)
    train_config_dir: str | None = None
    train_overrides: list[str] = field(default_factory=list)


@dataclass
class DisentangleConfig:
    """A disentangled model trained beside one iteration's plain model, on the same labels
    and budget, then both probed (docs/disentangle.md)."""

    iteration: str | None = None  # whose labels and plain model; default: the last
    train_config: str = "disentangle_demo"
    train_config_dir: str | None = None
    train_overrides: list[str] = field(default_factory=list)  # added after the iteration's own
    speaker_map: str | None = None  # default: speakers from the paths


@dataclass
class UnitAsrConfig:
    """Unit-based ASR on each iteration's labels as units: trained on train, scored
    (CER, WER) on valid, so the report shows what better units buy (docs/unit_asr.md)."""

    texts: str | None = None  # transcripts of the corpus (utterance<TAB>text or JSON lines)
    iterations: list[str] | None = None  # default: all
    train_config: str = "bart_demo"  # in configs/unit_asr (or train_config_dir)
    train_config_dir: str | None = None
    train_overrides: list[str] = field(default_factory=list)
    beam: int = 5


@dataclass
class PipelineConfig:
    corpus: str  # audio directory
    out: str = "pipeline_out"
    ext: str = "flac"
    valid_percent: float = 0.01
    seed: int = 0
    nshard: int = 1
    jobs: int = 1
    alignments: str | None = None  # phone alignments JSONL, for label quality
    manifest: str | None = None  # a folder with train.tsv and valid.tsv to use (e.g. held-out speakers) instead of a random split
    iterations: list[IterationConfig] = field(default_factory=list)
    disentangle: DisentangleConfig | None = None
    unit_asr: UnitAsrConfig | None = None


def _check_keys(values: dict, cls, where: str) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=2)
            raise HubertkitError(f"unknown key {where}{key!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))


def _typed(cls, values, where: str):
    """``cls(**values)`` with every value checked against its annotation (OmegaConf
    structured configs), so a wrong type stops the run before its first stage."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not isinstance(values, dict):
        raise HubertkitError(f"pipeline config: {where.rstrip('.') or 'the file'} must be a mapping, got {values!r}")
    _check_keys(values, cls, where)
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), values))
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or ""
        raise HubertkitError(f"pipeline config: {where}{key}: {str(e).splitlines()[0]}") from None


def parse_pipeline(tree: dict, base_dir: Path = Path(".")) -> PipelineConfig:
    if not isinstance(tree, dict) or "corpus" not in tree:
        raise HubertkitError("a pipeline config needs at least 'corpus' and 'iterations'")
    listed = tree.get("iterations") or []
    if not isinstance(listed, list):
        raise HubertkitError(f"pipeline config: 'iterations' must be a list of iterations, got {listed!r}")
    iterations = []
    for i, it in enumerate(listed, start=1):
        cfg = _typed(IterationConfig, {"name": f"iter{i}", **it} if isinstance(it, dict) else it, f"iterations[{i}].")
        if cfg.features not in ("mfcc", "hubert"):
            raise HubertkitError(f"iteration {cfg.name}: features must be 'mfcc' or 'hubert', got {cfg.features!r}")
        if cfg.features == "hubert" and (i == 1 or not cfg.layer):
            raise HubertkitError(f"iteration {cfg.name}: 'hubert' features need a 'layer' and a previous iteration")
        iterations.append(cfg)
    if not iterations:
        raise HubertkitError("the pipeline config lists no iterations")
    if len({it.name for it in iterations}) != len(iterations):
        raise HubertkitError("iteration names must be unique")
    dis = tree.get("disentangle")
    if dis is not None:
        dis = _typed(DisentangleConfig, dis, "disentangle.")
        dis.iteration = dis.iteration or iterations[-1].name
        if dis.iteration not in {it.name for it in iterations}:
            raise HubertkitError(f"disentangle.iteration {dis.iteration!r} is not an iteration of this pipeline")
    units = tree.get("unit_asr")
    if units is not None:
        units = _typed(UnitAsrConfig, units, "unit_asr.")
        if not units.texts:
            raise HubertkitError("unit_asr needs 'texts': the transcripts of the corpus")
        names = [it.name for it in iterations]
        units.iterations = units.iterations or names
        unknown = [n for n in units.iterations if n not in names]
        if unknown:
            raise HubertkitError(f"unit_asr.iterations {unknown} are not iterations of this pipeline")
    top = {k: v for k, v in tree.items() if k not in ("iterations", "disentangle", "unit_asr")}
    cfg = dataclasses.replace(_typed(PipelineConfig, top, ""), iterations=iterations, disentangle=dis, unit_asr=units)

    def rel(p):  # paths in the config are relative to the config file
        return None if p is None else str(p if Path(p).is_absolute() else (base_dir / p))

    cfg.corpus, cfg.alignments, cfg.manifest = rel(cfg.corpus), rel(cfg.alignments), rel(cfg.manifest)
    if cfg.disentangle:
        cfg.disentangle.speaker_map = rel(cfg.disentangle.speaker_map)
    if cfg.unit_asr:
        cfg.unit_asr.texts = rel(cfg.unit_asr.texts)
    return cfg


def load_pipeline(path: str | os.PathLike, overrides: dict | None = None) -> PipelineConfig:
    path = Path(path)
    if not path.is_file():
        raise HubertkitError(f"pipeline config {path} does not exist")
    tree = read_yaml_mapping(path, "pipeline config")
    tree.update(overrides or {})
    return parse_pipeline(tree, path.parent)


class Stages:
    """Runs named stages once per distinct input digest; prints progress."""

    def __init__(self, out: Path, total: int, until: str | None, log: Callable[[str], None]):
        self.dir = out / "stages"
        self.total, self.until, self.log = total, until, log
        self.count, self.ran, self.start = 0, [], time.time()
        self.stopped = False

    def run(self, name: str, inputs: dict, fn: Callable[[], object], outputs: tuple[Path, ...] = ()) -> str:
        """Returns this stage's digest (for the stages that depend on it). The stage is
        skipped only when it ran before with the same inputs and its ``outputs`` are
        still there, unchanged since."""
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
            t = time.time()
            result = fn()
            self.ran.append(name)
            write_text(record, json.dumps({"digest": digest, "inputs": inputs, "seconds": round(time.time() - t, 1),
                                           "result": str(result) if result is not None else None,
                                           "outputs": _fingerprint(outputs)}, indent=1, default=str) + "\n")
            self.log(f"[{self.count}/{self.total}] {name}: {result if result is not None else 'done'} ({time.time() - t:.0f} s)")
        if self.until and (name == self.until or name.split(".")[0] == self.until and name.endswith(".train")):
            self.stopped = True
        return digest


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


def _listing(corpus: str, ext: str) -> str:
    """A digest of the corpus's audio files (names, sizes, times): new or changed files
    make a new manifest."""
    files = sorted(Path(corpus).rglob(f"*.{ext.lstrip('.')}")) if Path(corpus).is_dir() else []
    return hashlib.sha256(json.dumps(_fingerprint(files)).encode()).hexdigest()[:16]


class _Stop(Exception):
    pass


def _file_digest(path: Path) -> str:
    if not path.is_file():
        raise HubertkitError(f"manifest {path} does not exist (the pipeline's 'manifest' folder needs train.tsv and valid.tsv)")
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _copy_manifest(path: Path, tsv: Path) -> int:
    """Copy a manifest into the pipeline's folder, after reading it (bad lines fail here)."""
    from hubertkit.data.manifest import read_manifest

    n = len(read_manifest(path))
    write_text(tsv / path.name, path.read_text())
    return n


def _final_checkpoint(ck: Path) -> Path:
    return ck / "checkpoint_best.pt" if (ck / "checkpoint_best.pt").is_file() else ck / "checkpoint_last.pt"


def _run_disentangle(cfg: PipelineConfig, stages: Stages, trained: dict, tsv: Path, progress: bool) -> None:
    """Pitch and speakers → the disentangled model (the plain one's labels, config and
    budget, plus the variant's keys) → probes of both, and the PNMI of k-means on the
    adversary's layer of each."""
    from hubertkit.data.speakers import write_speakers
    from hubertkit.features.pitch import dump_pitch
    from hubertkit.model.io import load_model
    from hubertkit.probe import probe_layers, write_probes
    from hubertkit.train.trainer import train

    dis, out = cfg.disentangle, Path(cfg.out)
    feat_dir, d = out / "pitch", out / "disentangled"
    plain_digest, plain_overrides = trained[dis.iteration]
    it = next(i for i in cfg.iterations if i.name == dis.iteration)

    def pitch():
        for split in SPLITS:
            dump_pitch(tsv, split, cfg.nshard, "all", feat_dir, jobs=cfg.jobs, progress=progress)
        return write_speakers(tsv, list(SPLITS), feat_dir, dis.speaker_map)

    pdig = stages.run("disentangle.pitch", {"manifest": str(tsv), "speaker_map": dis.speaker_map, "nshard": cfg.nshard}, pitch)
    overrides = [o for o in plain_overrides if not o.startswith("checkpoint.save_dir=")]
    overrides += [f"checkpoint.save_dir={d / 'checkpoints'}", f"task.feat_dir={feat_dir}", *dis.train_overrides]
    tdig = stages.run("disentangle.train", {"plain": plain_digest, "pitch": pdig, "config": dis.train_config, "overrides": overrides},
                      lambda: train(dis.train_config, overrides, dis.train_config_dir, progress=progress)["num_updates"])

    def probe():
        models = {"plain": _final_checkpoint(out / it.name / "checkpoints"), "disentangled": _final_checkpoint(d / "checkpoints")}
        layer = load_model(models["disentangled"]).cfg.speaker_layer
        summary = {"iteration": it.name, "speaker_layer": layer, "pnmi": {}}
        for name, ckpt in models.items():
            results = probe_layers(ckpt, tsv, alignments=cfg.alignments, speaker_map=dis.speaker_map, progress=progress)
            write_probes(results, d / "probe" / name, name=name)
            if cfg.alignments and layer:
                summary["pnmi"][name] = _layer_pnmi(ckpt, layer, it.n_clusters, tsv, d / "probe" / name / "layer", cfg, progress)
        write_text(d / "probe" / "summary.json", json.dumps(summary, indent=1) + "\n")
        return f"PNMI at layer {layer}: " + ", ".join(f"{k} {v:.3f}" for k, v in summary["pnmi"].items())

    stages.run("disentangle.probe", {"train": tdig, "alignments": cfg.alignments}, probe)


def _run_unit_asr(cfg: PipelineConfig, stages: Stages, labelled: dict, tsv: Path, progress: bool) -> None:
    """Per iteration: its labels as units → a unit-ASR model → valid CER and WER."""
    from hubertkit.asr.transcribe import error_rates
    from hubertkit.asr.unit_asr import train_unit_asr, transcribe_units
    from hubertkit.discrete_units import save_units, units_from_labels

    u, out = cfg.unit_asr, Path(cfg.out) / "unit_asr"
    rates = {it.name: it.label_rate for it in cfg.iterations}
    for name in u.iterations:
        d = out / name

        def run(name=name, d=d):
            for split in SPLITS:
                save_units(units_from_labels(tsv / f"{split}.tsv", Path(cfg.out) / name / "labels" / f"{split}.km"),
                           d / f"{split}.jsonl")
            overrides = [f"task.label_rate={rates[name]}", *u.train_overrides]
            result = train_unit_asr(d / "train.jsonl", u.texts, d / "valid.jsonl", u.train_config, overrides,
                                    u.train_config_dir, d / "checkpoints", progress=progress)
            scores = error_rates(transcribe_units(result["model"], d / "valid.jsonl", beam=u.beam, references=u.texts,
                                                  progress=progress))
            write_text(d / "scores.json", json.dumps({**scores, "updates": result["num_updates"]}, indent=1) + "\n")
            return f"valid CER {scores['cer']:.3f}, WER {scores['wer']:.3f}"

        stages.run(f"unit_asr.{name}", {"labels": labelled[name], "texts": u.texts, "config": u.train_config,
                                        "overrides": u.train_overrides, "beam": u.beam}, run)


def layer_labels(ckpt, layer: int, k: int, tsv: Path, work: Path, label_splits=("valid",), nshard: int = 1, jobs: int = 1,
                 seed: int = 0, progress: bool = False) -> Path:
    """Labels (``WORK/labels/{split}.km``, 50 Hz) of k-means with ``k`` clusters, fitted
    on the train split's features of one layer of ``ckpt``: an iteration's labelling,
    outside a pipeline."""
    from hubertkit.cluster.kmeans import dump_labels, learn_kmeans
    from hubertkit.data.labels import merge_labels
    from hubertkit.features.hubert import dump_hubert

    for split in SPLITS:
        dump_hubert(tsv, split, ckpt, layer, nshard, "all", work / "features", jobs=jobs, progress=progress)
    learn_kmeans(work / "features", "train", nshard, work / "kmeans.pt", k, seed=seed, progress=progress)
    for split in label_splits:
        dump_labels(work / "features", split, work / "kmeans.pt", nshard, "all", work / "labels", jobs=jobs, progress=progress)
        merge_labels(work / "labels", split, nshard)
    return work / "labels"


def _layer_pnmi(ckpt: Path, layer: int, k: int, tsv: Path, work: Path, cfg: PipelineConfig, progress: bool) -> float:
    """Valid PNMI of k-means (fitted on train) on one layer of a model, at 50 Hz."""
    from hubertkit.cluster.quality import label_quality

    labels = layer_labels(ckpt, layer, k, tsv, work, nshard=cfg.nshard, jobs=cfg.jobs, seed=cfg.seed, progress=progress)
    return label_quality(labels / "valid.km", cfg.alignments, 50, tsv / "valid.tsv").pnmi


STAGES_PER_ITERATION = ("features", "kmeans", "labels", "quality", "train")
DISENTANGLE_STAGES = ("disentangle.pitch", "disentangle.train", "disentangle.probe")


def _extra_stages(cfg: PipelineConfig) -> list[str]:
    """The optional sections' stages, in the order they run."""
    extra = list(DISENTANGLE_STAGES) if cfg.disentangle else []
    return extra + ([f"unit_asr.{n}" for n in cfg.unit_asr.iterations] if cfg.unit_asr else [])


def run_pipeline(cfg: PipelineConfig, until: str | None = None, progress: bool = True,
                 log: Callable[[str], None] = print) -> dict:
    from hubertkit.cluster.kmeans import dump_labels, learn_kmeans
    from hubertkit.cluster.quality import label_quality
    from hubertkit.data.labels import make_dict, merge_labels
    from hubertkit.data.manifest import make_manifest, manifest_path
    from hubertkit.features.dump import dump_mfcc
    from hubertkit.features.hubert import dump_hubert
    from hubertkit.train.trainer import train

    out = Path(cfg.out)
    extra = _extra_stages(cfg)
    valid_names = ["manifest"] + [f"{it.name}.{s}" for it in cfg.iterations for s in STAGES_PER_ITERATION] + extra
    valid_names += [it.name for it in cfg.iterations]
    if until and until not in valid_names:
        raise HubertkitError(f"--until {until!r} is not a stage; stages: {', '.join(valid_names)}")
    stages = Stages(out, 1 + len(STAGES_PER_ITERATION) * len(cfg.iterations) + len(extra), until, log)
    trained: dict[str, tuple[str, list[str]]] = {}  # iteration -> (train digest, overrides)
    labelled: dict[str, str] = {}  # iteration -> labels digest
    tsv = out / "manifest"
    results: dict = {"iterations": {}}
    try:
        if cfg.manifest:  # the user's split, copied (its content is the stage's input)
            given = {s: manifest_path(cfg.manifest, s) for s in SPLITS}
            prev = stages.run("manifest", {s: _file_digest(p) for s, p in given.items()},
                              lambda: {s: _copy_manifest(p, tsv) for s, p in given.items()}, (tsv,))
        else:
            prev = stages.run("manifest", {"corpus": cfg.corpus, "ext": cfg.ext, "valid_percent": cfg.valid_percent, "seed": cfg.seed,
                                           "files": _listing(cfg.corpus, cfg.ext)},
                              lambda: make_manifest(cfg.corpus, tsv, cfg.ext, cfg.valid_percent, cfg.seed), (tsv,))
        previous_ckpt, previous_train = None, None
        for it in cfg.iterations:
            d = out / it.name
            feats, km, lab, ck = d / "features", d / "kmeans.pt", d / "labels", d / "checkpoints"

            def features(it=it, feats=feats, ckpt=previous_ckpt):
                for split in SPLITS:
                    if it.features == "mfcc":
                        dump_mfcc(tsv, split, cfg.nshard, "all", feats, jobs=cfg.jobs, progress=progress)
                    else:
                        dump_hubert(tsv, split, ckpt, it.layer, cfg.nshard, "all", feats, jobs=cfg.jobs, progress=progress)
                return f"{it.features} features in {feats}"

            fdig = stages.run(f"{it.name}.features", {"manifest": prev, "features": it.features, "layer": it.layer,
                                                      "model": previous_train, "nshard": cfg.nshard}, features, (feats,))
            kdig = stages.run(f"{it.name}.kmeans", {"features": fdig, "k": it.n_clusters, "percent": it.kmeans_percent, "seed": cfg.seed},
                              lambda it=it, feats=feats, km=km: learn_kmeans(feats, "train", cfg.nshard, km, it.n_clusters,
                                                                             percent=it.kmeans_percent, seed=cfg.seed, progress=progress),
                              (km,))

            def labels(feats=feats, km=km, lab=lab):
                for split in SPLITS:  # every split labelled by the train k-means
                    dump_labels(feats, split, km, cfg.nshard, "all", lab, jobs=cfg.jobs, progress=progress)
                    merge_labels(lab, split, cfg.nshard)
                return make_dict(lab)["path"]

            ldig = labelled[it.name] = stages.run(f"{it.name}.labels", {"kmeans": kdig}, labels, (lab,))

            def quality(it=it, lab=lab, d=d):
                if not cfg.alignments:
                    return "no alignments given"
                q = {s: label_quality(lab / f"{s}.km", cfg.alignments, it.label_rate, tsv / f"{s}.tsv").as_dict() for s in SPLITS}
                write_text(d / "quality.json", json.dumps(q, indent=1) + "\n")
                return f"valid PNMI {q['valid']['pnmi']:.4f}"

            stages.run(f"{it.name}.quality", {"labels": ldig, "alignments": cfg.alignments, "rate": it.label_rate}, quality,
                       (d / "quality.json",) if cfg.alignments else ())
            overrides = [f"task.data={tsv}", f"task.label_dir={lab}", f"checkpoint.save_dir={ck}",
                         f"model.label_rate={it.label_rate}", *it.train_overrides]
            previous_train = stages.run(
                f"{it.name}.train", {"labels": ldig, "config": it.train_config, "overrides": overrides},
                lambda it=it, overrides=overrides: train(it.train_config, overrides, it.train_config_dir, progress=progress)["num_updates"],
                (ck,),
            )
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
    from hubertkit.report import write_report

    results["report"] = str(write_report(cfg))
    return {**results, "ran": stages.ran}
