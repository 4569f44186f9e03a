"""The report's sections read the pipeline's files and say what their numbers can carry."""

import json
from types import SimpleNamespace

from hubertkit.recipes.report import unit_asr_section


def unit_asr_run(tmp_path, wers: dict) -> SimpleNamespace:
    for name, wer in wers.items():
        (tmp_path / "unit_asr" / name).mkdir(parents=True)
        (tmp_path / "unit_asr" / name / "scores.json").write_text(json.dumps({"cer": 0.5, "wer": wer, "updates": 300}))
    return SimpleNamespace(out=str(tmp_path), iterations=[SimpleNamespace(name=n) for n in wers],
                           unit_asr=SimpleNamespace(train_config="bart_demo", beam=5))


def test_unit_asr_models_that_did_not_learn_the_task_are_named(tmp_path):
    text = "\n".join(unit_asr_section(unit_asr_run(tmp_path, {"iter1": 1.02, "iter2": 0.6}), {}))
    assert "| iter1 labels | – | 300 | 0.500 | 1.020 |" in text
    assert "The unit-ASR model of iter1 makes at least as many word errors" in text


def test_every_model_that_did_not_learn_the_task_is_named(tmp_path):
    text = "\n".join(unit_asr_section(unit_asr_run(tmp_path, {"iter1": 1.0, "iter2": 1.3, "iter3": 1.1}), {}))
    assert "The unit-ASR models of iter1, iter2 and iter3 make at least as many word errors" in text


def test_no_caveat_when_every_model_transcribes(tmp_path):
    text = "\n".join(unit_asr_section(unit_asr_run(tmp_path, {"iter1": 0.4, "iter2": 0.99}), {}))
    assert "have not learnt the task" not in text
