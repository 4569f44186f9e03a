"""Two CPU processes with gloo under torchrun: replicas stay identical, and the result
equals one process accumulating the same two batches per update."""

import subprocess
import sys

import torch
from test_trainer import overrides

from hubertkit.train.trainer import train

NO_DROPOUT = {"model.dropout": 0.0, "model.attention_dropout": 0.0, "model.dropout_input": 0.0,
              "model.encoder_layerdrop": 0.0, "optimization.max_update": 3, "lr_scheduler.total_num_update": 3,
              "checkpoint.save_interval_updates": 0, "dataset.max_tokens": 120000}


def test_two_processes_match_one_with_doubled_batch(labelled, tmp_path):
    args = overrides(labelled, tmp_path / "ddp", **NO_DROPOUT)
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "hubertkit", "train", "--config-name", "demo", *args, "-q"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "model replicas identical on all 2 processes" in r.stderr
    train("demo", overrides(labelled, tmp_path / "one", **NO_DROPOUT, **{"optimization.update_freq": "[2]"}), progress=False)
    ddp = torch.load(tmp_path / "ddp" / "checkpoint_last.pt", weights_only=True)
    one = torch.load(tmp_path / "one" / "checkpoint_last.pt", weights_only=True)
    assert ddp["trainer"]["num_updates"] == one["trainer"]["num_updates"] == 3
    for k, v in one["model"].items():
        torch.testing.assert_close(ddp["model"][k], v, atol=2e-5, rtol=1e-4, msg=k)


def torchrun(args):
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "hubertkit", "train", "--config-name", "demo", *args, "-q"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr[-3000:]


def test_fsdp_matches_one_process_and_resumes(labelled, tmp_path):
    # save at update 2 and 3: the gathered (collective) state dict mid-run and at the end
    fsdp = {**NO_DROPOUT, "distributed_training.ddp_backend": "fully_sharded", "checkpoint.save_interval_updates": 2}
    torchrun(overrides(labelled, tmp_path / "fsdp", **fsdp))
    torchrun(overrides(labelled, tmp_path / "resumed", **{**fsdp, "optimization.max_update": 2}))
    torchrun(overrides(labelled, tmp_path / "resumed", **fsdp))
    train("demo", overrides(labelled, tmp_path / "one", **NO_DROPOUT, **{"optimization.update_freq": "[2]"}), progress=False)
    sharded = torch.load(tmp_path / "fsdp" / "checkpoint_last.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "checkpoint_last.pt", weights_only=True)
    one = torch.load(tmp_path / "one" / "checkpoint_last.pt", weights_only=True)
    assert sharded["trainer"]["num_updates"] == resumed["trainer"]["num_updates"] == 3
    for k, v in one["model"].items():
        torch.testing.assert_close(sharded["model"][k], v, atol=2e-5, rtol=1e-4, msg=k)
        torch.testing.assert_close(resumed["model"][k], sharded["model"][k], atol=1e-6, rtol=1e-5, msg=k)
