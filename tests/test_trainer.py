"""The fairseq-style training command on the small demo corpus: runs, resumes exactly,
survives SIGKILL, handles non-finite losses and unwritable directories."""

import itertools
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from hubertkit.errors import HubertkitError
from hubertkit.model.io import load_model
from hubertkit.train.tasks import pretraining as loss_module
from hubertkit.train.trainer import train


def overrides(root, save_dir, **extra):
    base = {
        "task.data": root / "tsv", "task.label_dir": root / "labels", "checkpoint.save_dir": save_dir,
        "dataset.num_workers": 0, "dataset.max_tokens": 200000, "task.max_sample_size": 40000,
        "model.encoder_layers": 2, "optimization.max_update": 8, "lr_scheduler.total_num_update": 8,
        "lr_scheduler.warmup_updates": 2, "checkpoint.save_interval_updates": 2, "dataset.validate_interval_updates": 0,
        "common.log_interval": 1,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def weights(save_dir):
    return torch.load(save_dir / "checkpoint_last.pt", weights_only=True)["model"]


def log_records(save_dir, split="train"):
    return [json.loads(l) for l in (save_dir / "train_log.jsonl").read_text().splitlines() if json.loads(l)["split"] == split]


def test_train_runs_and_writes_checkpoints(labelled, tmp_path):
    r = train("demo", overrides(labelled, tmp_path / "ck", **{"optimization.max_update": 30, "lr_scheduler.total_num_update": 30,
                                                               "checkpoint.keep_interval_updates": 2}), progress=False)
    ck = tmp_path / "ck"
    assert r["num_updates"] == 30
    names = sorted(p.name for p in ck.glob("*.pt"))
    interval = [n for n in names if n not in ("checkpoint_best.pt", "checkpoint_last.pt")]
    assert len(interval) == 2 and interval[-1].endswith("_30.pt"), names  # keep_interval_updates=2
    assert "checkpoint_best.pt" in names and "checkpoint_last.pt" in names
    losses = [r["loss"] for r in log_records(ck)]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5, losses
    valid = log_records(ck, "valid")  # validated at the end
    assert valid and 0.05 < valid[-1]["mean_within_var"] <= 1  # a healthy model: no collapse warning
    model = load_model(ck / "checkpoint_last.pt")  # a training checkpoint is a model checkpoint too
    assert model.cfg.num_classes == [24] and model.cfg.encoder_layers == 2


def test_every_save_validates_so_the_best_checkpoint_sees_every_saved_update(labelled, tmp_path):
    ck = tmp_path / "ck"
    train("demo", overrides(labelled, ck, **{"checkpoint.save_interval_updates": 3, "dataset.validate_interval_updates": 4,
                                             "dataset.validate_after_updates": 4}), progress=False)
    valid = {r["update"]: r["loss"] for r in log_records(ck, "valid")}
    assert sorted(valid) == [4, 6, 8]  # every 4th, every save (3 is before validate_after_updates), the last
    saved = {u: valid[u] for u in (6, 8)}
    best = torch.load(ck / "checkpoint_best.pt", weights_only=True)["trainer"]
    assert best["num_updates"] == min(saved, key=saved.get) and best["best"] == min(saved.values())


def test_epoch_intervals_save_and_validate_at_the_ends_of_epochs(labelled, tmp_path, monkeypatch):
    """fairseq's checkpoint.save_interval and dataset.validate_interval count epochs: every
    epoch's end saves checkpoint_last.pt (save_interval 1), every 2nd validates; no update
    interval is set, so nothing else happens before the last update."""
    from hubertkit.train.checkpoint import Checkpointer

    saved = []
    real_save = Checkpointer.save
    monkeypatch.setattr(Checkpointer, "save", lambda self, at, *a: (saved.append(at.num_updates), real_save(self, at, *a)))
    ck = tmp_path / "ck"
    train("demo", overrides(labelled, ck, **{"optimization.max_update": 20, "lr_scheduler.total_num_update": 20,
                                             "checkpoint.save_interval_updates": 0, "checkpoint.save_interval": 1,
                                             "dataset.validate_interval": 2}), progress=False)
    epochs = [(r["update"], r["epoch"]) for r in log_records(ck)]
    ends = {u: e for (u, e), (_, after) in zip(epochs, epochs[1:]) if after != e}
    assert len(ends) >= 3, epochs  # the test needs several epochs within 20 updates
    assert saved == [*ends, 20]
    assert sorted(r["update"] for r in log_records(ck, "valid")) == [u for u, e in ends.items() if e % 2 == 0] + [20]
    state = torch.load(ck / "checkpoint_last.pt", weights_only=True)["trainer"]
    assert state["num_updates"] == 20


def test_resume_from_the_end_of_an_epoch_continues_exactly(labelled, tmp_path):
    """A run stopped by max_epoch saves at that epoch's end; resumed with more epochs, it
    goes on as one run would."""
    long = {"optimization.max_update": 20, "lr_scheduler.total_num_update": 20, "checkpoint.save_interval_updates": 0}
    train("demo", overrides(labelled, tmp_path / "a", **long), progress=False)
    train("demo", overrides(labelled, tmp_path / "b", **long, **{"optimization.max_epoch": 2}), progress=False)
    stopped = torch.load(tmp_path / "b" / "checkpoint_last.pt", weights_only=True)["trainer"]
    assert stopped["epoch"] == 2 and 0 < stopped["num_updates"] < 20
    train("demo", overrides(labelled, tmp_path / "b", **long), progress=False)
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_continues_exactly(labelled, tmp_path):
    train("demo", overrides(labelled, tmp_path / "a"), progress=False)
    train("demo", overrides(labelled, tmp_path / "b", **{"optimization.max_update": 4}), progress=False)
    train("demo", overrides(labelled, tmp_path / "b"), progress=False)
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    la, lb = log_records(tmp_path / "a"), log_records(tmp_path / "b")
    assert [r["loss"] for r in la[4:]] == [r["loss"] for r in lb[4:]]


def test_sigkill_then_resume_matches_uninterrupted_run(labelled, tmp_path):
    args = overrides(labelled, tmp_path / "killed", **{"checkpoint.save_interval_updates": 1})
    proc = subprocess.Popen([sys.executable, "-m", "hubertkit", "train", "--config-name", "demo", *args, "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "killed").glob("checkpoint_*_3.pt")) and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = torch.load(tmp_path / "killed" / "checkpoint_last.pt", weights_only=True)["trainer"]["num_updates"]
    # checkpoint_last.pt is written right after the interval checkpoint: it may be one behind
    assert 2 <= done < 8, "the run should have been killed mid-way"
    train("demo", args, progress=False)
    train("demo", overrides(labelled, tmp_path / "straight", **{"checkpoint.save_interval_updates": 1}), progress=False)
    a, b = weights(tmp_path / "killed"), weights(tmp_path / "straight")
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("first_bad", [3, 1])
def test_nonfinite_losses_are_skipped_then_stop(labelled, tmp_path, monkeypatch, first_bad):
    real = loss_module.hubert_loss
    calls = {"n": 0}

    def flaky(out, cfg):
        loss, n, log = real(out, cfg)
        calls["n"] += 1
        if calls["n"] >= first_bad:
            loss = loss * float("nan")
            log["loss"] = float("nan")
        return loss, n, log

    monkeypatch.setattr(loss_module, "hubert_loss", flaky)
    saved = first_bad > 2  # checkpoints every 2 updates
    message = "A re-run resumes from .*checkpoint_last.pt" if saved else "No checkpoint was saved yet"
    with pytest.raises(HubertkitError, match=f"3 updates in a row had a non-finite loss.*{message}"):
        train("demo", overrides(labelled, tmp_path / "ck", **{"checkpoint.max_nonfinite_updates": 3,
                                                               "optimization.max_update": 20,
                                                               "dataset.validate_after_updates": 20}), progress=False)
    assert calls["n"] == first_bad - 1 + 3  # exactly max_nonfinite_updates skipped (no validation ran), as documented
    if saved:
        state = torch.load(tmp_path / "ck" / "checkpoint_last.pt", weights_only=True)
        assert state["trainer"]["num_updates"] == 2  # the last good checkpoint
        assert all(torch.isfinite(v).all() for v in state["model"].values())
    else:
        assert not (tmp_path / "ck" / "checkpoint_last.pt").exists()


def test_unwritable_save_dir_fails_before_training(labelled, tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(HubertkitError, match="not writable"):
        train("demo", overrides(labelled, tmp_path / "file" / "ck"), progress=False)


def test_full_disk_keeps_the_previous_checkpoint(labelled, tmp_path, monkeypatch):
    import errno

    from hubertkit.model import checkpoint as checkpoint_module

    train("demo", overrides(labelled, tmp_path / "ck", **{"optimization.max_update": 2}), progress=False)
    before = (tmp_path / "ck" / "checkpoint_last.pt").read_bytes()
    real_save = torch.save

    def half_written(obj, f, *a, **kw):
        with open(f, "wb") as out:
            out.write(b"PK partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", half_written)
    with pytest.raises(HubertkitError, match="cannot write checkpoint .*No space left on device"):
        train("demo", overrides(labelled, tmp_path / "ck", **{"optimization.max_update": 4}), progress=False)
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)
    assert (tmp_path / "ck" / "checkpoint_last.pt").read_bytes() == before
    assert not [p for p in (tmp_path / "ck").iterdir() if p.name.endswith(".tmp")]


def test_task_and_model_label_rates_must_agree(labelled, tmp_path):
    with pytest.raises(HubertkitError, match="task.label_rate=50.0 but model.label_rate=100"):
        train("demo", [f"task.data={labelled / 'tsv'}", f"task.label_dir={labelled / 'labels'}",
                       f"checkpoint.save_dir={tmp_path}", "task.label_rate=50.0"], progress=False)


def test_progress_in_a_log_file_is_not_redrawn_every_update(labelled, tmp_path, capsys):
    train("demo", overrides(labelled, tmp_path / "ck"), progress=True)
    bar = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if line.startswith("train:")]
    assert 1 <= len(bar) <= 3  # the first draw and the last, not one per update (8 here)


def test_within_utterance_variance_flags_collapse():
    from hubertkit.train.tasks.pretraining import within_utterance_variance

    g = torch.Generator().manual_seed(0)
    healthy = torch.randn(3, 50, 8, generator=g)
    collapsed = torch.randn(3, 1, 8, generator=g).expand(3, 50, 8) + 1e-4 * torch.randn(3, 50, 8, generator=g)
    pad = torch.zeros(3, 50, dtype=torch.bool)
    pad[0, 30:] = True
    within, total = within_utterance_variance(healthy, pad)
    frames = healthy[~pad]
    assert abs(total - ((frames - frames.mean(0)) ** 2).sum().item()) < 1e-3
    ref = sum(((healthy[i][~pad[i]] - healthy[i][~pad[i]].mean(0)) ** 2).sum().item() for i in range(3))
    assert abs(within - ref) < 1e-3 and 0.9 < within / total <= 1
    within, total = within_utterance_variance(collapsed, None)
    assert within / total < 1e-6


@pytest.mark.parametrize("key,module", [("common.tensorboard_logdir", "torch.utils.tensorboard"), ("common.wandb_project", "wandb")])
def test_missing_logger_warns_and_trains(labelled, tmp_path, monkeypatch, caplog, key, module):
    monkeypatch.setitem(sys.modules, module, None)  # the import fails as if it were not installed
    r = train("demo", overrides(labelled, tmp_path / "ck", **{key: "tblog", "optimization.max_update": 2}), progress=False)
    assert r["num_updates"] == 2 and log_records(tmp_path / "ck")
    assert any(f"{key}=null" in m for m in caplog.messages), caplog.messages


def test_a_failed_checkpoint_write_keeps_the_resume_point(labelled, tmp_path, monkeypatch):
    """Disk full at an interval checkpoint (torch reports it as RuntimeError): a clear error,
    checkpoint_last.pt already holds that update, and a re-run resumes from it."""
    real_save = torch.save

    def full_disk(obj, f, *a, **kw):
        if "checkpoint_1_4.pt" in str(f):
            raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file data/3: file write failed")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(HubertkitError, match=r"cannot write checkpoint .*checkpoint_1_4.pt: .*file write failed") as e:
        train("demo", overrides(labelled, tmp_path / "ck"), progress=False)
    assert "nothing was written" in str(e.value) and "a re-run resumes from " + str(tmp_path / "ck" / "checkpoint_last.pt") in str(e.value)
    assert torch.load(tmp_path / "ck" / "checkpoint_last.pt", weights_only=True)["trainer"]["num_updates"] == 4
    assert not list((tmp_path / "ck").glob(".*.tmp"))
    monkeypatch.setattr(torch, "save", real_save)
    train("demo", overrides(labelled, tmp_path / "ck"), progress=False)
    train("demo", overrides(labelled, tmp_path / "ref"), progress=False)
    assert all(torch.equal(a, b) for a, b in zip(weights(tmp_path / "ck").values(), weights(tmp_path / "ref").values()))


def test_log_after_a_kill_is_one_history(labelled, tmp_path):
    """Updates a killed run logged after its last checkpoint are logged again on resume: once each in the log."""
    train("demo", overrides(labelled, tmp_path / "ck", **{"optimization.max_update": 4}), progress=False)
    with open(tmp_path / "ck" / "train_log.jsonl", "a") as f:  # what the killed run wrote after update 4
        f.write(json.dumps({"split": "train", "update": 5, "loss": 1.0}) + "\n" + '{"split": "train", "upd')
    train("demo", overrides(labelled, tmp_path / "ck"), progress=False)
    assert [r["update"] for r in log_records(tmp_path / "ck")] == list(range(1, 9))


def test_a_second_run_on_the_same_save_dir_is_refused(labelled, tmp_path):
    from hubertkit.fileio import FolderLock

    (tmp_path / "ck").mkdir()
    held = FolderLock(tmp_path / "ck", "test")  # as a running training holds it
    try:
        with pytest.raises(HubertkitError, match=r"checkpoint.save_dir .*ck is in use by hubertkit process \d+"):
            train("demo", overrides(labelled, tmp_path / "ck"), progress=False)
    finally:
        held.release()
    assert train("demo", overrides(labelled, tmp_path / "ck", **{"optimization.max_update": 1}), progress=False)["num_updates"] == 1


# -- starting from a checkpoint: fairseq's finetune_from_model and reset_* ---------------------------


def relabelled(labelled, tmp_path, k=10):
    """The same utterances with another label set: K=10 (labels mod 10), no sidecars."""
    lab = tmp_path / f"labels{k}"
    lab.mkdir()
    for split in ("train", "valid"):
        lines = (labelled / "labels" / f"{split}.km").read_text().splitlines()
        (lab / f"{split}.km").write_text("".join(" ".join(str(int(v) % k) for v in l.split()) + "\n" for l in lines))
    (lab / "dict.km.txt").write_text("".join(f"{i} 1\n" for i in range(k)))
    return lab


def test_continued_pretraining_from_a_fairseq_checkpoint_with_a_new_k(labelled, tmp_path):
    """A released model's encoder, new labels of another K: the encoder starts as the
    checkpoint's, the label embeddings and projection fresh, the counters at 0; a re-run
    of the same command resumes its own checkpoint_last.pt instead (fairseq's rule)."""
    from hubertkit.config import load_config
    from hubertkit.model.io import export
    from hubertkit.train.trainer import Trainer

    train("demo", overrides(labelled, tmp_path / "first", **{"optimization.max_update": 2}), progress=False)
    export(tmp_path / "first" / "checkpoint_last.pt", tmp_path / "released.pt", "fairseq")
    source = load_model(tmp_path / "released.pt").state_dict()
    lab = relabelled(labelled, tmp_path)
    args = overrides(labelled, tmp_path / "cont", **{"task.label_dir": lab, "optimization.max_update": 3,
                                                     "checkpoint.finetune_from_model": tmp_path / "released.pt"})
    trainer = Trainer(load_config("demo", args), progress=False)
    state = trainer.model.state_dict()
    assert trainer.at.num_updates == 0 and trainer.at.epoch == 1
    assert state["label_embs_concat"].shape[0] == 14 != source["label_embs_concat"].shape[0]
    for k, v in source.items():
        if not k.startswith(("label_embs_concat", "final_proj")):
            assert torch.equal(state[k], v), k
    trainer.close()
    assert train("demo", args, progress=False)["num_updates"] == 3
    assert [r["update"] for r in log_records(tmp_path / "cont")] == [1, 2, 3]
    resumed = overrides(labelled, tmp_path / "cont", **{"task.label_dir": lab, "optimization.max_update": 5,
                                                        "checkpoint.finetune_from_model": tmp_path / "released.pt"})
    train("demo", resumed, progress=False)
    assert [r["update"] for r in log_records(tmp_path / "cont")] == [1, 2, 3, 4, 5]  # resumed, not started again


def test_a_warm_start_reads_its_checkpoint_once(labelled, tmp_path, monkeypatch):
    from hubertkit.config import load_config
    from hubertkit.model.io import export
    from hubertkit.train.trainer import Trainer

    train("demo", overrides(labelled, tmp_path / "first", **{"optimization.max_update": 1}), progress=False)
    export(tmp_path / "first" / "checkpoint_last.pt", tmp_path / "released.pt", "fairseq")
    reads, load = [], torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **kw: reads.append(str(f)) or load(f, *a, **kw))
    args = overrides(labelled, tmp_path / "cont", **{"checkpoint.finetune_from_model": tmp_path / "released.pt"})
    Trainer(load_config("demo", args), progress=False).close()
    assert reads.count(str(tmp_path / "released.pt")) == 1


def test_restore_file_and_the_reset_flags_do_what_fairseqs_do(labelled, tmp_path):
    train("demo", overrides(labelled, tmp_path / "a", **{"optimization.max_update": 4}), progress=False)
    a = torch.load(tmp_path / "a" / "checkpoint_last.pt", weights_only=True)
    restore = {"checkpoint.restore_file": tmp_path / "a" / "checkpoint_last.pt", "optimization.max_update": 6}
    train("demo", overrides(labelled, tmp_path / "b", **restore), progress=False)  # everything restored
    assert [r["update"] for r in log_records(tmp_path / "b")] == [5, 6]
    train("demo", overrides(labelled, tmp_path / "c", **restore, **{"checkpoint.reset_optimizer": True}), progress=False)
    assert [r["update"] for r in log_records(tmp_path / "c")][:2] == [1, 2]  # the update count starts at 0 with the optimizer
    from hubertkit.config import load_config
    from hubertkit.train.trainer import Trainer

    for flags, check in (({"checkpoint.reset_dataloader": True}, lambda at: at.epoch == 1 and at.batch_in_epoch == 0
                          and at.num_updates == 4),
                         ({"checkpoint.reset_meters": True}, lambda at: at.best == float("inf") and at.samples_seen == 0
                          and at.num_updates == 4),
                         ({}, lambda at: at.best == a["trainer"]["best"] and at.samples_seen == a["trainer"]["samples_seen"]
                          and at.batch_in_epoch == a["trainer"]["batch_in_epoch"])):
        t = Trainer(load_config("demo", overrides(labelled, tmp_path / f"d{len(flags)}{list(flags)}", **restore, **flags)),
                    progress=False)
        assert check(t.at), flags
        assert torch.equal(t.model.state_dict()["label_embs_concat"], a["model"]["label_embs_concat"])
        t.close()


@pytest.mark.parametrize("extra, message", [
    ({"checkpoint.finetune_from_model": "M", "checkpoint.reset_optimizer": True}, "cannot be set with checkpoint.reset_optimizer"),
    ({"checkpoint.finetune_from_model": "M", "checkpoint.restore_file": "x.pt"}, "cannot be set together"),
    ({"checkpoint.restore_file": "/nonexistent/x.pt"}, "restore_file=/nonexistent/x.pt does not exist"),
    ({"checkpoint.finetune_from_model": "/nonexistent/m.pt"}, "finetune_from_model=/nonexistent/m.pt does not exist"),
])
def test_restore_options_that_cannot_work_are_refused(labelled, tmp_path, extra, message):
    with pytest.raises(HubertkitError, match=message):
        train("demo", overrides(labelled, tmp_path / "ck", **extra), progress=False)


def test_a_foreign_or_relabelled_restore_file_needs_the_resets_and_a_mismatched_encoder_is_named(labelled, tmp_path):
    from hubertkit.model.io import export

    train("demo", overrides(labelled, tmp_path / "a", **{"optimization.max_update": 2}), progress=False)
    export(tmp_path / "a" / "checkpoint_last.pt", tmp_path / "a.pt", "fairseq")
    with pytest.raises(HubertkitError, match="not a hubertkit training checkpoint.*reset_optimizer=true"):
        train("demo", overrides(labelled, tmp_path / "b", **{"checkpoint.restore_file": tmp_path / "a.pt"}), progress=False)
    lab = relabelled(labelled, tmp_path)
    with pytest.raises(HubertkitError, match="has another label set.*reset_optimizer=true"):
        train("demo", overrides(labelled, tmp_path / "c", **{"task.label_dir": lab,
                                                             "checkpoint.restore_file": tmp_path / "a" / "checkpoint_last.pt"}),
              progress=False)
    ok = {"checkpoint.reset_optimizer": True, "checkpoint.reset_dataloader": True, "optimization.max_update": 1}
    assert train("demo", overrides(labelled, tmp_path / "d", **{"checkpoint.restore_file": tmp_path / "a.pt", **ok}),
                 progress=False)["num_updates"] == 1
    with pytest.raises(HubertkitError, match=r"does not fit the configured model's encoder; .*not in the configured model: "
                                             r"encoder\.layers\.1\."):
        train("demo", overrides(labelled, tmp_path / "e", **{"model.encoder_layers": 1,
                                                             "checkpoint.finetune_from_model": tmp_path / "a.pt"}),
              progress=False)


def test_max_update_0_means_no_limit_and_max_epoch_ends_the_run(labelled, tmp_path):
    """fairseq's meaning of optimization.max_update=0 (its default): the run ends with max_epoch."""
    two = train("demo", overrides(labelled, tmp_path / "two", **{"optimization.max_update": 0, "optimization.max_epoch": 2}),
                progress=False)
    one = train("demo", overrides(labelled, tmp_path / "one", **{"optimization.max_update": 0, "optimization.max_epoch": 1}),
                progress=False)
    assert one["num_updates"] > 0 and two["num_updates"] == 2 * one["num_updates"]


def test_the_first_update_of_a_warm_up_moves_no_weight(labelled, tmp_path):
    """fairseq's trainer sets the learning rate for update 0 before the first step, so with
    a warm-up the first update runs at rate 0: after it every weight equals the start."""
    from hubertkit.config import load_config
    from hubertkit.train.trainer import Trainer

    cfg = load_config("demo", overrides(labelled, tmp_path / "ck", **{"optimization.max_update": 1}))
    trainer = Trainer(cfg, progress=False)
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    assert trainer.run()["num_updates"] == 1
    after = weights(tmp_path / "ck")
    assert all(torch.equal(after[k], v) for k, v in start.items())
    record = log_records(tmp_path / "ck")[0]
    assert record["lr"] == 0.0 and record["loss"] > 0
    train("demo", overrides(labelled, tmp_path / "ck", **{"optimization.max_update": 2}), progress=False)
    assert not all(torch.equal(weights(tmp_path / "ck")[k], v) for k, v in start.items())


def test_a_relaunch_with_restore_file_resumes_and_never_overwrites_later_work(labelled, tmp_path, monkeypatch):
    """fairseq reloads restore_file on every launch, so a requeued job would start again from
    it and overwrite checkpoint_last.pt: hubertkit resumes from checkpoint_last.pt, and
    refuses a save_dir whose checkpoint_last.pt another run wrote."""
    train("demo", overrides(labelled, tmp_path / "a", **{"optimization.max_update": 4}), progress=False)
    restore = {"checkpoint.restore_file": tmp_path / "a" / "checkpoint_last.pt"}
    train("demo", overrides(labelled, tmp_path / "b", **restore, **{"optimization.max_update": 6}), progress=False)
    assert train("demo", overrides(labelled, tmp_path / "b", **restore), progress=False)["num_updates"] == 8  # relaunch
    assert [r["update"] for r in log_records(tmp_path / "b")] == [5, 6, 7, 8]
    from hubertkit.config import load_config
    from hubertkit.train.trainer import Trainer

    reads, load = [], torch.load  # the relaunch reads checkpoint_last.pt once, to check it and to resume
    monkeypatch.setattr(torch, "load", lambda f, *a, **kw: reads.append(str(f)) or load(f, *a, **kw))
    Trainer(load_config("demo", overrides(labelled, tmp_path / "b", **restore)), progress=False).close()
    monkeypatch.undo()
    assert reads.count(str(tmp_path / "b" / "checkpoint_last.pt")) == 1
    train("demo", overrides(labelled, tmp_path / "once", **restore), progress=False)
    relaunched, once = weights(tmp_path / "b"), weights(tmp_path / "once")
    assert all(torch.equal(relaunched[k], v) for k, v in once.items())
    train("demo", overrides(labelled, tmp_path / "c", **{"optimization.max_update": 2}), progress=False)
    before = (tmp_path / "c" / "checkpoint_last.pt").read_bytes()
    with pytest.raises(HubertkitError, match=r"checkpoint_last.pt \(update 2\) is another run's.*move .* away"):
        train("demo", overrides(labelled, tmp_path / "c", **restore), progress=False)
    assert (tmp_path / "c" / "checkpoint_last.pt").read_bytes() == before


def test_the_optimizer_steps_all_parameters_at_once_with_the_same_result(labelled, tmp_path, monkeypatch):
    """AdamW's foreach form on the CPU (fused on CUDA): one call over every parameter, and
    the same weights as the parameter-by-parameter loop, bit for bit, here."""
    from hubertkit.config import load_config
    from hubertkit.train.trainer import Trainer

    trainer = Trainer(load_config("demo", overrides(labelled, tmp_path / "a", **{"optimization.max_update": 3})), progress=False)
    assert trainer.optimizer.defaults["foreach"] is True and not trainer.optimizer.defaults["fused"]
    trainer.run()
    adamw = torch.optim.AdamW

    def one_by_one(*args, **kwargs):
        return adamw(*args, **{**kwargs, "foreach": False, "fused": None})

    monkeypatch.setattr(torch.optim, "AdamW", one_by_one)
    train("demo", overrides(labelled, tmp_path / "b", **{"optimization.max_update": 3}), progress=False)
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_batches_reach_the_device_once_tensors_and_lists_of_them():
    from hubertkit.train.trainer import to_device

    batch = {"source": torch.zeros(2, 3), "target_list": [torch.zeros(2), torch.ones(2)], "padding_mask": None,
             "samples": 6, "ids": ["a", "b"]}
    assert to_device(batch, torch.device("cpu")) is batch
    moved = to_device(batch, torch.device("meta"))  # a device that is not the CPU, on any machine
    assert moved["source"].is_meta and all(t.is_meta for t in moved["target_list"])
    assert moved["padding_mask"] is None and moved["samples"] == 6 and moved["ids"] == ["a", "b"]


def test_the_model_reads_waveforms_as_the_task_does(labelled, tmp_path):
    """model.normalize follows task.normalize into the checkpoint; set alone it is refused."""
    with pytest.raises(HubertkitError, match="model.normalize=true but task.normalize=false"):
        train("demo", overrides(labelled, tmp_path / "a", **{"model.normalize": True}), progress=False)
    train("demo", overrides(labelled, tmp_path / "b", **{"task.normalize": True, "optimization.max_update": 1}),
          progress=False)
    assert load_model(tmp_path / "b" / "checkpoint_last.pt").cfg.normalize


def test_a_compiled_run_trains_as_the_eager_one_and_compiles_once(labelled, tmp_path, monkeypatch):
    """common.compile compiles the feature extractor and the Transformer for any length:
    the second epoch (other crop lengths) compiles nothing new; losses and weights follow
    the eager run's (aot_eager runs the same ATen kernels, so only the order of a few
    float32 reductions may differ), and the checkpoint's names are the eager model's."""
    from torch._dynamo.utils import counters

    from hubertkit.train.checkpoint import Checkpointer

    graphs, real_save = [], Checkpointer.save
    monkeypatch.setattr(Checkpointer, "save", lambda self, at, *a: (graphs.append(counters["stats"]["unique_graphs"]),
                                                                    real_save(self, at, *a)))
    epochs = {"optimization.max_epoch": 2, "optimization.max_update": 100, "lr_scheduler.total_num_update": 100,
              "checkpoint.save_interval_updates": 0, "checkpoint.save_interval": 1,
              "dataset.disable_validation": True}  # eval mode would add its own graphs at the last update
    torch._dynamo.reset()
    counters.clear()
    train("demo", overrides(labelled, tmp_path / "c", **epochs, **{"common.compile": "aot_eager"}), progress=False)
    assert len(graphs) == 2 and 0 < graphs[0] == graphs[1], graphs  # epoch 2 compiled nothing new
    train("demo", overrides(labelled, tmp_path / "e", **epochs), progress=False)
    follows_eager(tmp_path / "c", tmp_path / "e")
    assert load_model(tmp_path / "c" / "checkpoint_last.pt").cfg.encoder_layers == 2  # an eager model loads it


def follows_eager(compiled_dir, eager_dir):
    """A compiled run's logged losses and final weights against the eager run's: the same
    sums in another order (fused kernels), so losses within 1e-4 relative and weights,
    after a few Adam updates (whose steps are about lr in size whatever the gradient's
    rounding), within 1e-3; the same weight names (no ``_orig_mod.``)."""
    compiled, eager = log_records(compiled_dir), log_records(eager_dir)
    assert [r["update"] for r in compiled] == [r["update"] for r in eager] and compiled
    for c, e in zip(compiled, eager):
        assert c["loss"] == pytest.approx(e["loss"], rel=1e-4), (c, e)
    ours, reference = weights(compiled_dir), weights(eager_dir)
    assert list(ours) == list(reference)
    for k in ours:
        torch.testing.assert_close(ours[k], reference[k], rtol=1e-3, atol=1e-5)


def test_compile_is_for_hubert_encoders(labelled, tmp_path):
    with pytest.raises(HubertkitError, match="common.compile='tvm' is out of range: it must be null, 'inductor'"):
        train("demo", overrides(labelled, tmp_path / "a", **{"common.compile": "tvm"}), progress=False)


def test_a_step_reads_device_values_twice_whatever_its_batches(labelled, tmp_path, monkeypatch):
    """The tasks leave their statistics on the device and the trainer reads them in one go,
    then the gradient norm: two reads a step by the trainer and tasks (on a GPU each is a
    wait for the device), not one per statistic, label set or micro-batch. Counted in a
    step of two micro-batches (update_freq 2) with two label sets."""
    import shutil
    import traceback

    from hubertkit.config import load_config
    from hubertkit.train.trainer import Trainer

    for split in ("train", "valid"):
        shutil.copy(labelled / "labels" / f"{split}.km", tmp_path / f"{split}.km2")
    labels = tmp_path / "labels"
    shutil.copytree(labelled / "labels", labels)
    for split in ("train", "valid"):
        shutil.copy(tmp_path / f"{split}.km2", labels / f"{split}.km2")
    shutil.copy(labels / "dict.km.txt", labels / "dict.km2.txt")
    cfg = load_config("demo", overrides(labelled, tmp_path / "ck", **{"task.label_dir": labels, "task.labels": "[km,km2]",
                                                                     "optimization.update_freq": "[2]"}))
    trainer = Trainer(cfg, progress=False)
    batches, mine = trainer.epoch_batches(1)
    pending = list(itertools.islice(iter(trainer._loader(batches, mine)), 2))
    reads = []
    names = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")
    originals = {n: getattr(torch.Tensor, n) for n in names}

    def counted(name, real):
        def read(self, *args, **kwargs):
            caller = traceback.extract_stack(limit=2)[0]
            if f"hubertkit{os.sep}train{os.sep}" in caller.filename:
                reads.append(f"{name} at {caller.filename}:{caller.lineno}")
            return real(self, *args, **kwargs)
        return read

    for name, real in originals.items():
        monkeypatch.setattr(torch.Tensor, name, counted(name, real))
    out = trainer.train_step(pending)
    monkeypatch.undo()
    trainer.close()
    assert not out["skipped"] and "loss_m_1" in out and out["acc_m_1"].count > 0
    assert len(reads) == 2, reads


def test_masks_drawn_by_the_loader_train_as_the_models_own(labelled, tmp_path, monkeypatch):
    """DataLoader workers draw each batch's masks from the seed of the step that will take
    it, off the step's path: the run trains to the same weights, bit for bit, as one whose
    model draws them in the step, with 0 or 2 workers and two batches an update."""
    import hubertkit.train.trainer as trainer_module
    from hubertkit.train.tasks.pretraining import PretrainingTask

    drawn = []
    real = trainer_module.batch_masks
    monkeypatch.setattr(trainer_module, "batch_masks", lambda *a: drawn.append(1) or real(*a))
    extra = {"optimization.max_update": 4, "optimization.update_freq": "[2]"}
    for workers in (0, 2):
        train("demo", overrides(labelled, tmp_path / f"loader{workers}", **extra, **{"dataset.num_workers": workers}),
              progress=False)
    assert len(drawn) == 8  # the run with 0 workers drew in this process: 4 updates of 2 batches
    monkeypatch.setattr(PretrainingTask, "loader_masks", staticmethod(lambda model: None))
    train("demo", overrides(labelled, tmp_path / "model", **extra), progress=False)
    assert len(drawn) == 8
    ref = weights(tmp_path / "model")
    for workers in (0, 2):
        assert all(torch.equal(ref[k], v) for k, v in weights(tmp_path / f"loader{workers}").items()), workers
