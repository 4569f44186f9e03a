"""The pipeline's config (``hubertkit pipeline CONFIG``): the corpus, the iterations, and
the optional disentangling and unit-ASR comparisons, as OmegaConf structured configs so a
wrong type or key stops the run before its first stage."""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hubertkit.config.load import read_yaml_mapping
from hubertkit.errors import HubertkitError, did_you_mean


@dataclass(frozen=True)
class IterationConfig:
    name: str
    features: str = "mfcc"  # "mfcc", or "hubert": layer `layer` of the previous iteration's model
    layer: Any = None  # a layer number (1-based), or "auto": the layer of highest valid PNMI (needs alignments)
    init: str = "scratch"  # "scratch", or "previous": warm-start from the previous iteration's model
    layer_metric: str = "pnmi"  # what layer "auto" maximises: "pnmi", or "abx" (lowest mean of within and across error)
    n_clusters: int = 100
    label_rate: float = 100.0
    kmeans_percent: float = -1.0
    train_config: str = "demo"  # a config name in configs/ (or train_config_dir)
    train_config_dir: str | None = None
    train_overrides: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DisentangleConfig:
    """A disentangled model trained beside one iteration's plain model, on the same labels
    and budget, then both probed (docs/disentangle.md)."""

    iteration: str | None = None  # whose labels and plain model; default: the last
    train_config: str = "disentangle_demo"
    train_config_dir: str | None = None
    train_overrides: list[str] = field(default_factory=list)  # added after the iteration's own
    speaker_map: str | None = None  # default: speakers from the paths


@dataclass(frozen=True)
class UnitAsrConfig:
    """Unit-based ASR on each iteration's labels as units: trained on train, scored
    (CER, WER) on valid, so the report shows what better units buy (docs/unit_asr.md)."""

    texts: str | None = None  # transcripts of the corpus (utterance<TAB>text or JSON lines)
    iterations: list[str] | None = None  # default: all
    train_config: str = "bart_demo"  # in configs/unit_asr (or train_config_dir)
    train_config_dir: str | None = None
    train_overrides: list[str] = field(default_factory=list)
    beam: int = 5


@dataclass(frozen=True)
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


def _typed(cls, values, where: str):
    """``cls(**values)`` with every value checked against its annotation (OmegaConf
    structured configs), so a wrong type stops the run before its first stage."""
    if not isinstance(values, dict):
        raise HubertkitError(f"pipeline config: {where.rstrip('.') or 'the file'} must be a mapping, got {values!r}")
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            raise HubertkitError(f"unknown key {where}{key!r}{did_you_mean(key, names)}")
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), values))
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or ""
        raise HubertkitError(f"pipeline config: {where}{key}: {str(e).splitlines()[0]}") from None


def parse_pipeline(tree: dict, base_dir: Path = Path(".")) -> PipelineConfig:
    if not isinstance(tree, dict) or "corpus" not in tree:
        raise HubertkitError("a pipeline config needs at least 'corpus' and 'iterations'")

    def rel(p):  # paths in the config are relative to the config file
        return None if p is None else str(p if Path(p).is_absolute() else (base_dir / p))
    listed = tree.get("iterations") or []
    if not isinstance(listed, list):
        raise HubertkitError(f"pipeline config: 'iterations' must be a list of iterations, got {listed!r}")
    iterations = []
    for i, it in enumerate(listed, start=1):
        cfg = _typed(IterationConfig, {"name": f"iter{i}", **it} if isinstance(it, dict) else it, f"iterations[{i}].")
        if cfg.features not in ("mfcc", "hubert"):
            raise HubertkitError(f"iteration {cfg.name}: features must be 'mfcc' or 'hubert', got {cfg.features!r}")
        if cfg.features == "mfcc" and cfg.layer is not None:
            raise HubertkitError(f"iteration {cfg.name}: 'layer' chooses a layer of the previous model, for 'hubert' "
                                 f"features; MFCC features have none (remove layer: {cfg.layer!r})")
        if cfg.features == "hubert" and (i == 1 or not cfg.layer):
            raise HubertkitError(f"iteration {cfg.name}: 'hubert' features need a 'layer' and a previous iteration")
        if cfg.layer is not None and cfg.layer != "auto" and not (isinstance(cfg.layer, int) and cfg.layer >= 1):
            raise HubertkitError(f"iteration {cfg.name}: layer must be a layer number (1 = the first) or 'auto', "
                                 f"got {cfg.layer!r}")
        if cfg.layer == "auto" and not tree.get("alignments"):
            raise HubertkitError(f"iteration {cfg.name}: layer 'auto' chooses by valid PNMI, which needs 'alignments'")
        if cfg.layer_metric not in ("pnmi", "abx"):
            raise HubertkitError(f"iteration {cfg.name}: layer_metric must be 'pnmi' or 'abx', got {cfg.layer_metric!r}")
        if cfg.init not in ("scratch", "previous") or (cfg.init == "previous" and i == 1):
            raise HubertkitError(f"iteration {cfg.name}: init must be 'scratch' or 'previous' (warm-start from the "
                                 f"previous iteration's model; not for the first), got {cfg.init!r}")
        iterations.append(cfg)
    if not iterations:
        raise HubertkitError("the pipeline config lists no iterations")
    for it in iterations:  # names become folders under `out`
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", it.name) or ".." in it.name:
            raise HubertkitError(f"iteration name {it.name!r}: use letters, digits, '_', '.' and '-' (it names a folder under out)")
    if len({it.name for it in iterations}) != len(iterations):
        raise HubertkitError("iteration names must be unique")
    dis = tree.get("disentangle")
    if dis is not None:
        dis = _typed(DisentangleConfig, dis, "disentangle.")
        dis = dataclasses.replace(dis, iteration=dis.iteration or iterations[-1].name,
                                  speaker_map=rel(dis.speaker_map))
        if dis.iteration not in {it.name for it in iterations}:
            raise HubertkitError(f"disentangle.iteration {dis.iteration!r} is not an iteration of this pipeline")
    units = tree.get("unit_asr")
    if units is not None:
        units = _typed(UnitAsrConfig, units, "unit_asr.")
        if not units.texts:
            raise HubertkitError("unit_asr needs 'texts': the transcripts of the corpus")
        names = [it.name for it in iterations]
        units = dataclasses.replace(units, iterations=units.iterations or names, texts=rel(units.texts))
        unknown = [n for n in units.iterations if n not in names]
        if unknown:
            raise HubertkitError(f"unit_asr.iterations {unknown} are not iterations of this pipeline")
    top = _typed(PipelineConfig, {k: v for k, v in tree.items() if k not in ("iterations", "disentangle", "unit_asr")}, "")
    return dataclasses.replace(top, iterations=iterations, disentangle=dis, unit_asr=units, corpus=rel(top.corpus),
                               alignments=rel(top.alignments), manifest=rel(top.manifest))


def load_pipeline(path: str | os.PathLike, overrides: dict | None = None) -> PipelineConfig:
    path = Path(path)
    if not path.is_file():
        raise HubertkitError(f"pipeline config {path} does not exist")
    tree = read_yaml_mapping(path, "pipeline config")
    tree.update(overrides or {})
    return parse_pipeline(tree, path.parent)
