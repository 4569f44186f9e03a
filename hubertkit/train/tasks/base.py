"""What the trainer trains: a task builds the datasets and the model, and turns a batch
(already on the device) into a loss, the sample size gradients are divided by, and
statistics.
Everything else (updates, precision, distribution, checkpoints, resume, logging) is the
trainer's, the same for every task.

Statistics are summed over micro-batches, processes and log intervals, then reported: a
number as its sum (``loss`` per ``sample_size``, in bits), a :class:`Ratio` as its
mean (accuracies, error rates, mean losses).
"""

from __future__ import annotations

from dataclasses import dataclass
import jiwer
import torch
from torch import nn

from hubertkit.config.model import HubertConfig
from hubertkit.config.train import TrainConfig


@dataclass(frozen=True)
class Ratio:
    """A quantity reported as ``total / count``: summed as a pair, divided once at the end."""

    total: float
    count: float

    def __add__(self, other: Ratio) -> Ratio:
        return Ratio(self.total + other.total, self.count + other.count)

    @property
    def value(self) -> float:
        return self.total / self.count if self.count else 0.0


Stats = dict[str, "float | Ratio"]


class Task:
    """The base of every task: the methods without a body are each task's own."""

    datasets: list  # one per split asked for: train first
    checkpoint_kind: str  # what its checkpoints hold (model/checkpoint.py's KINDS)

    def __init__(self, cfg: TrainConfig, splits: list[str], trust_pickle: bool = False):
        raise NotImplementedError

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def encoder(self, model: nn.Module) -> nn.Module:
        """The HuBERT encoder inside ``model`` (its config is checkpointed; its layers are
        sharded one by one under FSDP)."""
        raise NotImplementedError

    def loss(self, net: nn.Module, batch: dict, generator: torch.Generator, train: bool,
             num_updates: int) -> tuple[torch.Tensor, int, Stats]:
        """The summed loss of ``batch``, its sample size, and ``loss`` / ``sample_size``
        among the statistics; masks and dropout draw from ``generator``; ``num_updates``
        (updates completed) drives what changes over training (freezing, warm-ups)."""
        raise NotImplementedError

    def loader_masks(self, model: nn.Module) -> HubertConfig | None:
        """The model config whose masks DataLoader workers draw for the training batches
        (``model/masking.batch_masks``, off the step's path); None: the model draws its
        own in the step."""
        return None

    def checkpoint_fields(self, model: nn.Module) -> dict:
        """What a checkpoint needs besides the weights to rebuild the model."""
        return {}

    def check_start(self, state: dict, fresh: list[str], path) -> None:
        """Refuse a checkpoint of this task (``state``) whose output rows this run would
        read as other symbols (a reordered dictionary); ``fresh``: the head groups that
        start anew instead of taking the checkpoint's weights."""

    def progress_fields(self, summary: dict) -> dict[str, str]:
        """What the progress bar shows of an update's statistics, beside loss and lr."""
        return {}

    def after_validation(self, valid: dict, num_updates: int) -> None:
        """A look at each validation's statistics (e.g. to warn of a collapse)."""


def first_difference(ours: list[str], theirs: list[str]) -> str:
    """Where two symbol lists first differ, in words."""
    k = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))

    def entry(symbols: list[str]) -> str:
        return repr(symbols[k]) if k < len(symbols) else "nothing"

    return f"entry {k + 1} is {entry(theirs)} there and {entry(ours)} here"


def unwrap(net: nn.Module) -> nn.Module:
    """The model inside DDP."""
    return net.module if hasattr(net, "module") else net


def add_errors(stats: Stats, ref: list[str], hyp: list[str]) -> None:
    """Letter (``uer``) and word (``wer``) errors of one utterance's ``.ltr`` symbols (``|``
    between words), added to ``stats``, as fairseq's ctc criterion reports them."""
    words = ["".join(x).replace("|", " ").split() for x in (ref, hyp)]
    stats["uer"] = stats.get("uer", Ratio(0, 0)) + Ratio(edits(ref, hyp), len(ref))
    stats["wer"] = stats.get("wer", Ratio(0, 0)) + Ratio(edits(*words), len(words[0]))


def edits(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance between two token lists (tokens without spaces)."""
    if not ref:
        return len(hyp)
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    return out.substitutions + out.deletions + out.insertions
