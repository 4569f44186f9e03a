"""Training on a SLURM cluster through submitit (``pip install 'hubertkit[slurm]'``):
one task per GPU on each node, each a training process set up as torchrun would set it
up; a job preempted or out of time is requeued and resumes from ``checkpoint_last.pt``.

The run is set up once before anything is submitted (config, data, labels, the checkpoint
it starts from, ``save_dir``: ``check_training``), so a mistake stops at the submitting
shell, not after hours in the queue. ``cluster="local"`` runs the same
job as processes on this machine (submitit's local executor): the tested path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hubertkit.config import load_config
from hubertkit.errors import HubertkitError
from hubertkit.optional import require
from hubertkit.train.trainer import check_training, train


@dataclass(frozen=True)
class SlurmJob:
    nodes: int = 1
    gpus_per_node: int = 8  # one task per GPU; on a CPU-only (or local) run, processes per node
    partition: str | None = None
    timeout_min: int = 72 * 60
    cpus_per_task: int = 10  # data loader workers and the main process
    logs: str = "slurm_logs"  # submitit's folder: each task's stdout, stderr and result
    cluster: str | None = None  # None: SLURM when sbatch is there; "local": processes on this machine
    additional: dict = field(default_factory=dict)  # other sbatch options, e.g. {"account": "x", "qos": "y"}


class TrainingTask:
    """What each task runs. submitit pickles it into the job; on preemption or timeout
    submitit calls ``checkpoint``, which resubmits the same task, and the trainer resumes
    from ``checkpoint_last.pt`` in ``checkpoint.save_dir`` as any re-run does."""

    def __init__(self, config_name: str, overrides: list[str], config_dir: str | None, trust_pickle: bool = False):
        self.config_name, self.overrides, self.config_dir = config_name, list(overrides), config_dir
        self.trust_pickle = trust_pickle

    def __call__(self) -> dict:
        require("submitit", "slurm")
        from submitit.helpers import TorchDistributedEnvironment

        env = TorchDistributedEnvironment()
        # one device per process is chosen from LOCAL_RANK, so every GPU of the node stays visible
        env.export(set_cuda_visible_devices=False, overwrite=True)
        return train(self.config_name, self.overrides, self.config_dir, progress=False, trust_pickle=self.trust_pickle)

    def checkpoint(self, *args, **kwargs):
        require("submitit", "slurm")
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(TrainingTask(self.config_name, self.overrides, self.config_dir, self.trust_pickle))


def submit_training(config_name: str, overrides: list[str] = (), config_dir: str | None = None,
                    job: SlurmJob = SlurmJob(), trust_pickle: bool = False, check: bool = True):
    """Submit ``hubertkit train`` as one job of ``job.nodes × job.gpus_per_node`` processes;
    returns submitit's job (``.job_id``, ``.results()``). ``check``: set the run up here
    first (it loads the data and any starting checkpoint, so it needs their paths here)."""
    submitit = require("submitit", "slurm")
    for name, value in (("--nodes", job.nodes), ("--gpus-per-node", job.gpus_per_node),
                        ("--timeout-min", job.timeout_min), ("--cpus-per-task", job.cpus_per_task)):
        if value < 1:
            raise HubertkitError(f"{name} must be at least 1, got {value}")
    cfg = load_config(config_name, list(overrides), config_dir)  # refused here, before the queue
    if cfg.checkpoint.no_save:
        raise HubertkitError("checkpoint.no_save=true on a cluster: a preempted job would restart from update 0")
    if check:
        check_training(cfg, trust_pickle)
    executor = submitit.AutoExecutor(folder=job.logs, cluster=job.cluster)
    tasks = job.gpus_per_node
    params = {"nodes": job.nodes, "tasks_per_node": tasks, "timeout_min": job.timeout_min,
              "cpus_per_task": job.cpus_per_task, "name": f"hubertkit-{config_name}"}
    if executor.cluster != "local":
        params.update(gpus_per_node=tasks, slurm_partition=job.partition,
                      slurm_additional_parameters=dict(job.additional), slurm_signal_delay_s=120)
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    config_dir = str(Path(config_dir).resolve()) if config_dir else None  # the job may start elsewhere
    return executor.submit(TrainingTask(config_name, list(overrides), config_dir, trust_pickle))

