"""The training objectives, by ``model._name``: a new one is a module with a
:class:`~hubertkit.train.tasks.base.Task` and one ``register_task`` call (docs/architecture.md)."""

from __future__ import annotations

from hubertkit.config.train import TrainConfig, register_model
from hubertkit.data.manifest import manifest_path
from hubertkit.errors import HubertkitError
from hubertkit.train.tasks.base import Task
from hubertkit.train.tasks.finetuning import FinetuningTask
from hubertkit.train.tasks.pretraining import PretrainingTask
from hubertkit.train.tasks.unit_asr import UnitAsrTask

TASKS: dict[str, type[Task]] = {
    "hubert": PretrainingTask,
    "hubert_ctc": FinetuningTask,
    "unit_bart": UnitAsrTask,
    "unit_ctc": UnitAsrTask,
}


def register_task(name: str, task: type[Task], model_config: type, criteria: tuple[str, ...] = ("hubert",),
                  task_name: str = "hubert_pretraining") -> None:
    """A new training objective: ``model._name=name`` trains ``task``, with the keys of
    ``model_config`` in the ``model`` section, with these ``criterion._name``s and ``task._name``."""
    register_model(name, model_config, criteria, task_name)
    TASKS[name] = task


def make_task(cfg: TrainConfig, splits: list[str], trust_pickle: bool = False) -> Task:
    """``trust_pickle``: fine-tuning may start from a fairseq checkpoint that pickles its config."""
    if cfg.model._name not in TASKS:
        raise HubertkitError(f"model._name={cfg.model._name} has no training task; hubertkit has {', '.join(TASKS)}")
    return TASKS[cfg.model._name](cfg, splits, trust_pickle)


def has_split(cfg: TrainConfig, split: str) -> bool:
    """Whether the data has ``split`` (the valid split is optional)."""
    if cfg.task._name == "unit_asr":
        return split == cfg.dataset.train_subset or (split == cfg.dataset.valid_subset and bool(cfg.task.valid_data))
    return manifest_path(cfg.task.data, split).is_file()
