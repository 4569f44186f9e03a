"""The pipeline's config (``hubertkit pipeline CONFIG``): the corpus, the iterations, and
the optional disentangling and unit-ASR comparisons, as OmegaConf structured configs so a
wrong type or key stops the run before its first stage."""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hubertkit.config.keys import AT_LEAST_1, UNIT_INTERVAL, describe, key
from hubertkit.config.load import read_yaml_mapping
from hubertkit.errors import HubertkitError, did_you_mean


LAYER = (lambda v: v is None or v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
         "a layer number (1 = the first) or 'auto'")


def one_of(*values: str) -> tuple:
    return (lambda v: v in values, " or ".join(repr(v) for v in values))


@dataclass(frozen=True)
class IterationConfig:
    """One HuBERT iteration: features, k-means labels, training (docs/pipeline.md)."""

    name: str = key(help="the iteration's folder under out (default: iter1, iter2, ...)")
    features: str = key("mfcc", "what is clustered: 'mfcc', or 'hubert' (layer `layer` of the previous "
                        "iteration's model)", check=one_of("mfcc", "hubert"))
    layer: Any = key(None, "with hubert features: a layer number (1-based), or 'auto' (the layer of highest valid "
                     "PNMI, which needs alignments; or lowest ABX error, see layer_metric)", check=LAYER)
    init: str = key("scratch", "'scratch', or 'previous': warm-start from the previous iteration's model",
                    check=one_of("scratch", "previous"))
    layer_metric: str = key("pnmi", "what layer 'auto' maximises: 'pnmi', or 'abx' (lowest mean of within and across "
                            "error)", check=one_of("pnmi", "abx"))
    n_clusters: int = key(100, "k-means clusters, the number of labels", check=AT_LEAST_1)
    label_rate: float = key(100.0, "label frame rate in Hz: 100 for MFCC, the model's frame rate (50) for a layer",
                            check=(lambda v: v > 0, "> 0"))
    kmeans_percent: float = key(-1.0, "fraction of the train features k-means is fitted on (-1: all), as "
                                "learn-kmeans --percent")
    train_config: str = key("demo", "a training config name in configs/ (or train_config_dir)")
    train_config_dir: str | None = key(None, "folder of train_config, if not the shipped configs")
    train_overrides: list[str] = key(factory=list, help="key=value overrides of the training config")


@dataclass(frozen=True)
class DisentangleConfig:
    """A disentangled model trained beside one iteration's plain model, on the same labels
    and budget, then both probed (docs/disentangle.md)."""

    iteration: str | None = key(None, "whose labels and plain model (default: the last iteration)")
    train_config: str = key("disentangle_demo", "a training config name in configs/ (or train_config_dir)")
    train_config_dir: str | None = key(None, "folder of train_config, if not the shipped configs")
    train_overrides: list[str] = key(factory=list, help="overrides added after the iteration's own")
    speaker_map: str | None = key(None, "utterance-to-speaker table (default: speakers from the paths)")


@dataclass(frozen=True)
class UnitAsrConfig:
    """Unit-based ASR on each iteration's labels as units: trained on train, scored
    (CER, WER) on valid, so the report shows what better units buy (docs/unit_asr.md)."""

    texts: str | None = key(None, "transcripts of the corpus (utterance<TAB>text, or JSON lines); required")
    iterations: list[str] | None = key(None, "whose labels are the units (default: every iteration)")
    train_config: str = key("bart_demo", "a config name in configs/unit_asr (or train_config_dir)")
    train_config_dir: str | None = key(None, "folder of train_config, if not the shipped configs")
    train_overrides: list[str] = key(factory=list, help="key=value overrides of the training config")
    beam: int = key(5, "beam size of the scoring transcription", check=AT_LEAST_1)


@dataclass(frozen=True)
class PipelineConfig:
    corpus: str = key(help="audio directory")
    out: str = key("pipeline_out", "output directory: every stage's results, resumable")
    ext: str = key("flac", "audio file extension")
    valid_percent: float = key(0.01, "fraction of the files in the valid split", check=UNIT_INTERVAL)
    seed: int = key(0, "seed of the split and of the k-means")
    nshard: int = key(1, "feature and label shards", check=AT_LEAST_1)
    jobs: int = key(1, "processes for features and labels", check=AT_LEAST_1)
    alignments: str | None = key(None, "phone alignments (JSON lines), for label quality and layer 'auto'")
    manifest: str | None = key(None, "a folder with train.tsv and valid.tsv to use (e.g. held-out speakers) instead "
                               "of a random split")
    iterations: list[IterationConfig] = key(factory=list, help="the iterations, in order")
    disentangle: DisentangleConfig | None = key(None, "a disentangled model beside one iteration's (optional)")
    unit_asr: UnitAsrConfig | None = key(None, "unit ASR on each iteration's units (optional)")


SECTIONS = {"": PipelineConfig, "iterations[]": IterationConfig, "disentangle": DisentangleConfig,
            "unit_asr": UnitAsrConfig}


def describe_pipeline() -> str:
    """Every key of the pipeline config with its default and rules (``--help-config``)."""
    return describe({group: [cls] for group, cls in SECTIONS.items()})


def _typed(cls, values, where: str):
    """``cls(**values)`` with every value checked against its annotation (OmegaConf
    structured configs), so a wrong type stops the run before its first stage."""
    if not isinstance(values, dict):
        raise HubertkitError(f"pipeline config: {where.rstrip('.') or 'the file'} must be a mapping, got {values!r}")
    names = [f.name for f in dataclasses.fields(cls)]
    for given in values:
        if given not in names:
            raise HubertkitError(f"unknown key {where}{given!r}{did_you_mean(given, names)}")
    try:
        typed = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), values))
    except OmegaConfBaseException as e:
        name = getattr(e, "full_key", None) or ""
        raise HubertkitError(f"pipeline config: {where}{name}: {str(e).splitlines()[0]}") from None
    for f in dataclasses.fields(cls):
        if "check" in f.metadata and not f.metadata["check"][0](getattr(typed, f.name)):
            raise HubertkitError(f"pipeline config: {where}{f.name} must be {f.metadata['check'][1]}, "
                                 f"got {getattr(typed, f.name)!r}")
    return typed


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
        if cfg.features == "mfcc" and cfg.layer is not None:
            raise HubertkitError(f"iteration {cfg.name}: 'layer' chooses a layer of the previous model, for 'hubert' "
                                 f"features; MFCC features have none (remove layer: {cfg.layer!r})")
        if cfg.features == "hubert" and (i == 1 or not cfg.layer):
            raise HubertkitError(f"iteration {cfg.name}: 'hubert' features need a 'layer' and a previous iteration")
        if cfg.layer == "auto" and not tree.get("alignments"):
            raise HubertkitError(f"iteration {cfg.name}: layer 'auto' chooses by valid PNMI, which needs 'alignments'")
        if cfg.init == "previous" and i == 1:
            raise HubertkitError(f"iteration {cfg.name}: init 'previous' warm-starts from the previous iteration's "
                                 "model; the first has none")
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
