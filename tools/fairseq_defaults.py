"""Read fairseq's config dataclasses from its source (parsed, never imported) and write
their code defaults to ``tests/data/fairseq_defaults.json``, the reference that
``tests/test_config.py`` compares hubertkit's dataclasses with, key by key.

    python tools/fairseq_defaults.py FAIRSEQ_CHECKOUT [--commit SHA]

A default is a literal, ``II("a.b")`` (written ``${a.b}``), ``MISSING`` (``???``), or a
name this script cannot evaluate (kept as ``<expr: ...>``, which never equals ours).
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

# fairseq file -> its dataclasses whose defaults hubertkit mirrors
SOURCES = {
    "fairseq/dataclass/configs.py": ["CommonConfig", "DatasetConfig", "OptimizationConfig", "CheckpointConfig",
                                     "DistributedTrainingConfig"],
    "fairseq/optim/adam.py": ["FairseqAdamConfig"],
    "fairseq/optim/lr_scheduler/polynomial_decay_schedule.py": ["PolynomialDecayLRScheduleConfig"],
    "fairseq/optim/lr_scheduler/tri_stage_lr_scheduler.py": ["TriStageLRScheduleConfig"],
    "fairseq/criterions/hubert_criterion.py": ["HubertCriterionConfig"],
    "fairseq/criterions/ctc.py": ["CtcCriterionConfig"],
    "fairseq/criterions/label_smoothed_cross_entropy.py": ["LabelSmoothedCrossEntropyCriterionConfig"],
    "fairseq/models/hubert/hubert.py": ["HubertConfig"],
    "fairseq/models/hubert/hubert_asr.py": ["HubertAsrConfig", "HubertCtcConfig"],
    "fairseq/tasks/hubert_pretraining.py": ["HubertPretrainingConfig"],
}


def default_of(node: ast.expr | None, source: str):
    """The default a dataclass field declares: ``x: T = value`` or ``field(default=...)``."""
    if node is None:
        return "???"
    if isinstance(node, ast.Call):
        name = ast.unparse(node.func)
        if name == "field":
            kw = {k.arg: k.value for k in node.keywords}
            if "default" in kw:
                return default_of(kw["default"], source)
            if "default_factory" in kw:
                factory = kw["default_factory"]
                return default_of(factory.body if isinstance(factory, ast.Lambda) else factory, source)
            return "???"
        if name == "II":
            return "${" + ast.literal_eval(node.args[0]) + "}"
    if isinstance(node, ast.Name) and node.id == "MISSING":
        return "???"
    try:
        value = ast.literal_eval(node)
    except ValueError:
        return f"<expr: {ast.unparse(node)}>"
    return list(value) if isinstance(value, tuple) else value


def dataclass_defaults(path: Path, names: list[str]) -> dict[str, dict]:
    tree = ast.parse(path.read_text())
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    out = {}
    for name in names:
        fields = {}
        for cls in _lineage(classes, name):
            for stmt in cls.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    fields[stmt.target.id] = default_of(stmt.value, str(path))
        out[name] = fields
    return out


def _lineage(classes: dict, name: str) -> list[ast.ClassDef]:
    """The class and its bases defined in the same file, base first (later fields win)."""
    cls = classes[name]
    bases = [b.id for b in cls.bases if isinstance(b, ast.Name) and b.id in classes]
    return [c for b in bases for c in _lineage(classes, b)] + [cls]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fairseq", type=Path, help="a fairseq source checkout")
    parser.add_argument("--commit", default=None, help="the checkout's commit, recorded in the output")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "data" / "fairseq_defaults.json")
    args = parser.parse_args()
    classes = {}
    for rel, names in SOURCES.items():
        if not (args.fairseq / rel).is_file():
            sys.exit(f"{args.fairseq / rel} is missing: is {args.fairseq} a fairseq checkout?")
        classes.update(dataclass_defaults(args.fairseq / rel, names))
    record = {"source": "github.com/facebookresearch/fairseq", "commit": args.commit, "files": sorted(SOURCES),
              "classes": classes}
    args.out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}: {sum(len(v) for v in classes.values())} defaults of {len(classes)} dataclasses")


if __name__ == "__main__":
    main()
