"""docs/architecture.md's example: a new training objective is one module with one
registration call. The module is taken from the doc as it is, executed, and trained."""

import json
import re
import types
from pathlib import Path

from hubertkit.config.train import PAIRS, SECTIONS
from hubertkit.train.tasks import TASKS
from hubertkit.train.trainer import train
from test_trainer import overrides

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def test_the_documented_task_trains(labelled, tmp_path, monkeypatch):
    source = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    assert len(source.splitlines()) <= 40
    for registry in (SECTIONS["model"], PAIRS, TASKS):  # what the module registers, removed after the test
        monkeypatch.setitem(registry, "hubert_smoothed", None)
    example = types.ModuleType("example_task")
    exec(compile(source, str(DOC), "exec"), example.__dict__)
    assert TASKS["hubert_smoothed"] is example.SmoothedTask
    save = tmp_path / "ck"
    result = train("demo", overrides(labelled, save, **{"model._name": "hubert_smoothed",
                                                        "model.label_smoothing": 0.2}), progress=False)
    assert result["num_updates"] == 8
    log = [json.loads(line) for line in (save / "train_log.jsonl").read_text().splitlines()]
    assert all(0 <= r["acc_m_0"] <= 1 and r["loss"] > 0 for r in log if r["split"] == "train")
