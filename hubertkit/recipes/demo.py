"""``hubertkit demo``: the two-iteration pipeline (``configs/pipeline_demo.yaml``) on the
small corpus shipped in the package (``hubertkit/corpora/demo``), ending with a report of label quality and
training curves per iteration."""

from __future__ import annotations

import importlib.util
from importlib import resources
from pathlib import Path

from hubertkit.config import config_dir_default, read_yaml_mapping
from hubertkit.config.pipeline import parse_pipeline
from hubertkit.errors import HubertkitError
from hubertkit.recipes.pipeline import run_pipeline

DEMO_CORPUS = Path(str(resources.files("hubertkit") / "corpora" / "demo"))


def find_corpus(corpus: str | None = None) -> Path:
    c = Path(corpus) if corpus else DEMO_CORPUS
    if not (c / "alignments.jsonl").is_file():
        raise HubertkitError(f"demo corpus not found: {c} has no alignments.jsonl")
    return c


def demo_tree(out: str = "demo_out", corpus: str | None = None, jobs: int = 2, max_update: int | None = None) -> dict:
    """The demo's pipeline config as a YAML tree (``parse_pipeline`` reads it): for
    ``run_demo``, and for experiments that change one stage of the demo's run."""
    corpus_dir = find_corpus(corpus).resolve()
    path = config_dir_default() / "pipeline_demo.yaml"
    tree = read_yaml_mapping(path, "pipeline config")  # the demo's changes go into the YAML's tree, before parsing
    tree.update(out=out, jobs=jobs, corpus=str(corpus_dir), alignments=str(corpus_dir / "alignments.jsonl"))
    if tree.get("unit_asr"):
        tree["unit_asr"]["texts"] = tree["alignments"]
        if importlib.util.find_spec("transformers") is None:
            print("unit-based ASR skipped: it needs transformers (pip install 'hubertkit[asr]')")
            del tree["unit_asr"]
    if max_update is not None and max_update < 1:
        raise HubertkitError(f"--max-update must be at least 1, got {max_update} (leave it out for the demo's own 400)")
    if max_update:
        def extend(section: dict, *overrides: str) -> None:
            section["train_overrides"] = [*section.get("train_overrides", []), f"optimization.max_update={max_update}",
                                          *overrides]

        for it in tree["iterations"]:
            extend(it, f"lr_scheduler.total_num_update={max_update}")
        if tree.get("unit_asr"):
            extend(tree["unit_asr"], f"dataset.validate_interval_updates={max_update}")
    return tree


def run_demo(
    out: str = "demo_out", corpus: str | None = None, jobs: int = 2, progress: bool = True, max_update: int | None = None,
    until: str | None = None,
) -> str:
    tree = demo_tree(out, corpus, jobs, max_update)
    result = run_pipeline(parse_pipeline(tree, config_dir_default()), until=until, progress=progress)
    if "report" not in result:
        return f"stopped after {result['stopped']}; outputs in {out}"
    report = Path(result["report"])
    return report.read_text() + f"\n(report: {report}; figures beside it)"
