"""The SLURM path through submitit, run by submitit's local executor: two processes of
one job train as torchrun's two would (the same weights as one process with a doubled
batch), and a bad config is refused before anything is submitted."""

import pytest
import torch
from test_distributed import NO_DROPOUT
from test_trainer import overrides

from hubertkit.errors import HubertkitError
from hubertkit.train.slurm import SlurmJob, TrainingTask, submit_training
from hubertkit.train.trainer import train

submitit = pytest.importorskip("submitit", reason="submitit is the 'slurm' extra (installed with 'test')")


def test_a_local_job_of_two_processes_trains_as_torchrun_does(labelled, tmp_path):
    job = submit_training("demo", overrides(labelled, tmp_path / "job", **NO_DROPOUT), job=SlurmJob(
        gpus_per_node=2, cluster="local", logs=str(tmp_path / "logs"), timeout_min=5))
    results = job.results()
    assert [r["num_updates"] for r in results] == [3, 3]
    train("demo", overrides(labelled, tmp_path / "one", **NO_DROPOUT, **{"optimization.update_freq": "[2]"}), progress=False)
    ours = torch.load(tmp_path / "job" / "checkpoint_last.pt", weights_only=True)
    one = torch.load(tmp_path / "one" / "checkpoint_last.pt", weights_only=True)
    for k, v in one["model"].items():
        torch.testing.assert_close(ours["model"][k], v, atol=2e-5, rtol=1e-4, msg=k)


def test_a_bad_config_is_refused_before_submission(labelled, tmp_path):
    with pytest.raises(HubertkitError, match="optimization.max_updat"):
        submit_training("demo", overrides(labelled, tmp_path / "x") + ["optimization.max_updat=3"],
                        job=SlurmJob(cluster="local", logs=str(tmp_path / "logs")))
    with pytest.raises(HubertkitError, match="at least 1"):
        submit_training("demo", overrides(labelled, tmp_path / "x"), job=SlurmJob(nodes=0, cluster="local"))
    assert not (tmp_path / "logs").exists()


def test_a_preempted_task_is_requeued_as_the_same_run():
    task = TrainingTask("demo", ["task.data=D"], "/configs")
    again = task.checkpoint()
    assert isinstance(again, submitit.helpers.DelayedSubmission)
    assert vars(again.function) == vars(task)


@pytest.mark.parametrize("change, message", [
    ({"task.data": "/nonexistent/tsv"}, "/nonexistent/tsv/train.tsv does not exist"),
    ({"task.label_dir": "/nonexistent/labels"}, "/nonexistent/labels"),
    ({"checkpoint.restore_file": "/nonexistent/x.pt"}, "restore_file=/nonexistent/x.pt does not exist"),
    ({"checkpoint.finetune_from_model": "m.pt", "checkpoint.reset_optimizer": True}, "cannot be set with"),
    ({"checkpoint.save_dir": "FILE"}, "save_dir"),
    ({"model.encoder_layers": 1, "checkpoint.save_dir": "TRAINED"}, "trained with another model config"),
])
def test_a_run_that_would_fail_in_the_job_is_refused_before_submission(labelled, tmp_path, change, message):
    (tmp_path / "FILE").write_text("")
    if change.get("checkpoint.save_dir") == "TRAINED":
        train("demo", overrides(labelled, tmp_path / "TRAINED", **{"optimization.max_update": 1}), progress=False)
    change = {k: tmp_path / v if v in ("FILE", "TRAINED") else v for k, v in change.items()}
    with pytest.raises(HubertkitError, match=message):
        submit_training("demo", overrides(labelled, tmp_path / "ck", **change),
                        job=SlurmJob(cluster="local", logs=str(tmp_path / "logs")))
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize("field", ["timeout_min", "cpus_per_task"])
def test_job_resources_below_one_are_refused(labelled, tmp_path, field):
    with pytest.raises(HubertkitError, match=f"--{field.replace('_', '-')} must be at least 1, got 0"):
        submit_training("demo", overrides(labelled, tmp_path / "x"), job=SlurmJob(cluster="local", **{field: 0}))
