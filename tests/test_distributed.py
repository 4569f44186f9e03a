"""Two CPU processes with gloo under torchrun: replicas stay identical, and the result
equals one process accumulating the same two batches per update."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
from test_trainer import overrides

from hubertkit.train.trainer import train

NO_DROPOUT = {"model.dropout": 0.0, "model.attention_dropout": 0.0, "model.dropout_input": 0.0,
              "model.encoder_layerdrop": 0.0, "optimization.max_update": 3, "lr_scheduler.total_num_update": 3,
              "checkpoint.save_interval_updates": 0, "dataset.max_tokens": 120000}


def test_two_processes_match_one_with_doubled_batch(labelled, tmp_path):
    args = overrides(labelled, tmp_path / "ddp", **NO_DROPOUT)
    assert "model replicas identical on all 2 processes" in torchrun(args)
    train("demo", overrides(labelled, tmp_path / "one", **NO_DROPOUT, **{"optimization.update_freq": "[2]"}), progress=False)
    ddp = torch.load(tmp_path / "ddp" / "checkpoint_last.pt", weights_only=True)
    one = torch.load(tmp_path / "one" / "checkpoint_last.pt", weights_only=True)
    assert ddp["trainer"]["num_updates"] == one["trainer"]["num_updates"] == 3
    for k, v in one["model"].items():
        torch.testing.assert_close(ddp["model"][k], v, atol=2e-5, rtol=1e-4, msg=k)


def torchrun(args, command="train", timeout=120, program=("-m", "hubertkit"), launcher=(), env=None):
    """``torchrun --nproc-per-node 2 -m hubertkit COMMAND``; a hung job fails the test and
    leaves no process behind (the whole process group is killed)."""
    p = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *launcher,
         *program, command, "--config-name", "demo", *args, "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, **(env or {})},
    )
    try:
        _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        _, err = p.communicate()
        raise AssertionError(f"torchrun did not end within {timeout} s:\n{err[-3000:]}") from None
    assert p.returncode == 0, err[-3000:]
    return err


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


def one_utterance_valid(labelled, out):
    """The labelled corpus with a valid split of one utterance: one batch, so the second
    process's share of the validation is empty."""
    import json
    import shutil

    shutil.copytree(labelled / "tsv", out / "tsv")
    shutil.copytree(labelled / "labels", out / "labels", ignore=shutil.ignore_patterns("*.npy", "*.store.json"))
    tsv = (out / "tsv" / "valid.tsv").read_text().splitlines(keepends=True)
    (out / "tsv" / "valid.tsv").write_text("".join(tsv[:2]))
    first = (out / "labels" / "valid.km").read_text().splitlines(keepends=True)[0]
    (out / "labels" / "valid.km").write_text(first)
    meta = json.loads((out / "labels" / "valid.km.json").read_text())
    meta.update(utterances=1, frames=len(first.split()))
    (out / "labels" / "valid.km.json").write_text(json.dumps(meta))
    return out


def test_a_process_without_validation_batches_does_not_hang(labelled, tmp_path):
    data = one_utterance_valid(labelled, tmp_path / "data")
    torchrun(overrides(data, tmp_path / "ck", **{**NO_DROPOUT, "dataset.validate_interval_updates": 2}))
    valid = [json.loads(line) for line in (tmp_path / "ck" / "train_log.jsonl").read_text().splitlines()
             if json.loads(line)["split"] == "valid"]
    assert [r["update"] for r in valid] == [2, 3] and all(r["sample_size"] > 0 for r in valid), valid


def test_fine_tuning_with_a_one_batch_valid_split_ends(labelled, demo_dir, tmp_path):
    from hubertkit.data.text import prepare_text
    from hubertkit.model.hubert import HubertModel
    from hubertkit.model.io import save_model
    from hubertkit.config import preset

    data = one_utterance_valid(labelled, tmp_path / "data")
    prepare_text(data / "tsv", ["train", "valid"], data / "ltr", demo_dir / "alignments.jsonl")
    torch.manual_seed(0)
    save_model(HubertModel(preset("tiny", encoder_layers=2)), tmp_path / "pre.pt")
    args = {"task.data": data / "tsv", "task.label_dir": data / "ltr", "model.w2v_path": tmp_path / "pre.pt",
            "checkpoint.save_dir": tmp_path / "ft", "dataset.num_workers": 0, "dataset.max_tokens": 120000,
            "optimization.max_update": 2, "model.freeze_finetune_updates": 0, "dataset.validate_interval_updates": 1,
            "lr_scheduler.phase_ratio": "null", "lr_scheduler.warmup_steps": 1, "lr_scheduler.decay_steps": 1}
    torchrun([f"{k}={v}" for k, v in args.items()], command="finetune")
    valid = [json.loads(line) for line in (tmp_path / "ft" / "train_log.jsonl").read_text().splitlines()
             if json.loads(line)["split"] == "valid"]
    assert [r["update"] for r in valid] == [1, 2] and all("wer" in r for r in valid), valid


def test_a_killed_rank_restarts_and_resumes_to_the_same_weights(labelled, tmp_path):
    """kill -9 of one rank after the save at update 4: torchrun --max-restarts 1 starts
    both again, they resume from checkpoint_last.pt, and the final weights equal an
    uninterrupted run's bit for bit, dropout included (each process's random stream is
    saved and restored)."""
    helper = Path(__file__).parent / "helpers" / "die_once.py"
    args = overrides(labelled, tmp_path / "killed", **{"dataset.max_tokens": 120000, "checkpoint.save_interval_updates": 2})
    err = torchrun(args, program=(str(helper),), launcher=("--max-restarts", "1"),
                   env={"HUBERTKIT_DIE_AT": "4", "HUBERTKIT_DIE_MARKER": str(tmp_path / "marker")}, timeout=240)
    assert (tmp_path / "marker").read_text() == "killed at update 4\n"
    assert "started from" in err and "at update 4" in err, err[-2000:]
    torchrun(overrides(labelled, tmp_path / "once", **{"dataset.max_tokens": 120000, "checkpoint.save_interval_updates": 2}))
    killed = torch.load(tmp_path / "killed" / "checkpoint_last.pt", weights_only=True)
    once = torch.load(tmp_path / "once" / "checkpoint_last.pt", weights_only=True)
    assert killed["trainer"]["num_updates"] == once["trainer"]["num_updates"] == 8
    assert all(torch.equal(killed["model"][k], v) for k, v in once["model"].items())
