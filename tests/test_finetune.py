"""CTC fine-tuning: fairseq's semantics (frozen encoder first, frozen CNN, letters from
.ltr), any pretrained checkpoint, exact resume, and error rates at validation."""

import json
import re
import shutil

import pytest
import torch

from test_trainer import follows_eager

from hubertkit.config import config_dir_default, load_config, preset
from hubertkit.data.text import prepare_text
from hubertkit.errors import HubertkitError
from hubertkit.model.convert import export_hf
from hubertkit.model.ctc import load_ctc
from hubertkit.model.hubert import HubertModel
from hubertkit.model.io import save_model
from hubertkit.train.schedule import tri_stage
from hubertkit.train.tasks.base import edits
from hubertkit.train.trainer import finetune


@pytest.fixture(scope="module")
def texts(prepared, demo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ltr")
    prepare_text(prepared / "tsv", ["train", "valid"], out, demo_dir / "alignments.jsonl")
    return out


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("pre") / "pretrained.pt"
    save_model(HubertModel(preset("tiny", encoder_layers=2)), path)
    return path


def run(prepared, texts, w2v, save_dir, **extra):
    base = {"task.data": prepared / "tsv", "task.label_dir": texts, "model.w2v_path": w2v, "checkpoint.save_dir": save_dir,
            "dataset.num_workers": 0, "dataset.max_tokens": 150000, "optimization.max_update": 6,
            "model.freeze_finetune_updates": 3, "dataset.validate_interval_updates": 3, "checkpoint.save_interval_updates": 2,
            "lr_scheduler.warmup_steps": 2, "lr_scheduler.decay_steps": 4, "lr_scheduler.phase_ratio": "null",
            "common.log_interval": 1}
    base.update(extra)
    return finetune("demo", [f"{k}={v}" for k, v in base.items()], progress=False)


def test_a_compiled_finetuning_follows_the_eager_one(prepared, texts, pretrained, tmp_path):
    """common.compile in CTC fine-tuning, masks (apply_mask) and the frozen updates included."""
    run(prepared, texts, pretrained, tmp_path / "c", **{"common.compile": "aot_eager", "model.apply_mask": True})
    run(prepared, texts, pretrained, tmp_path / "e", **{"model.apply_mask": True})
    follows_eager(tmp_path / "c", tmp_path / "e")


def test_finetune_freezes_then_trains_and_reports_error_rates(prepared, texts, pretrained, tmp_path):
    run(prepared, texts, pretrained, tmp_path / "ck", **{"checkpoint.keep_interval_updates": -1})
    before = torch.load(pretrained, weights_only=True)["model"]
    at2 = torch.load(next((tmp_path / "ck").glob("checkpoint_*_2.pt")), weights_only=True)["model"]
    last = torch.load(tmp_path / "ck" / "checkpoint_last.pt", weights_only=True)["model"]
    enc = "encoder.layers.0.fc1.weight"
    assert torch.equal(at2[f"hubert.{enc}"], before[enc])  # frozen for the first 3 updates
    assert not torch.equal(at2["proj.weight"], last["proj.weight"])
    assert not torch.equal(last[f"hubert.{enc}"], before[enc])  # then fine-tuned
    conv = "feature_extractor.conv_layers.0.conv.weight"
    assert torch.equal(last[f"hubert.{conv}"], before[conv])  # feature_grad_mult 0: never trained
    records = [json.loads(l) for l in (tmp_path / "ck" / "train_log.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in records if r["split"] == "train"]
    assert lrs[:4] == pytest.approx([1e-5, 1e-5 + (1e-3 - 1e-5) / 2, 1e-3, 1e-3 * 0.05 ** 0.25])  # tri-stage, 2 + 0 + 4
    valid = [r for r in records if r["split"] == "valid"]
    assert valid and {"wer", "uer"} <= set(valid[-1]) and valid[0]["update"] >= 3  # validate_after_updates
    model = load_ctc(tmp_path / "ck" / "checkpoint_best.pt")
    assert model.symbols == (texts / "dict.ltr.txt").read_text().split()[::2]


def test_finetune_resumes_exactly(prepared, texts, pretrained, tmp_path):
    run(prepared, texts, pretrained, tmp_path / "a")
    run(prepared, texts, pretrained, tmp_path / "b", **{"optimization.max_update": 4})
    run(prepared, texts, pretrained, tmp_path / "b")
    a, b = (torch.load(tmp_path / d / "checkpoint_last.pt", weights_only=True)["model"] for d in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_any_checkpoint_kind_and_random_init(prepared, texts, pretrained, tmp_path):
    export_hf(HubertModel(preset("tiny", encoder_layers=2)), tmp_path / "hf")
    run(prepared, texts, tmp_path / "hf", tmp_path / "from_hf", **{"optimization.max_update": 2})
    run(prepared, texts, pretrained, tmp_path / "scratch", **{"optimization.max_update": 2, "model.no_pretrained_weights": True})
    before = torch.load(pretrained, weights_only=True)["model"]
    scratch = torch.load(tmp_path / "scratch" / "checkpoint_last.pt", weights_only=True)["model"]
    assert not torch.equal(scratch["hubert.encoder.layers.0.fc1.weight"], before["encoder.layers.0.fc1.weight"])


def test_config_mistakes_are_caught(prepared, texts, tmp_path):
    with pytest.raises(HubertkitError, match="model.w2v_path"):
        load_config("base_10h", ["task.data=x", "task.label_dir=y", "model.w2v_path=null"], str(config_dir_default() / "finetune"))
    with pytest.raises(HubertkitError, match="criterion._name=ctc"):
        load_config("base_10h", ["task.data=x", "task.label_dir=y", "model.w2v_path=z", "criterion._name=hubert"],
                    str(config_dir_default() / "finetune"))


def test_tri_stage_schedule():
    lr = [tri_stage(u, 1.0, 10, 5, 20, 0.01, 0.05) for u in (0, 5, 10, 14, 15, 25, 35, 100)]
    assert lr[0] == pytest.approx(0.01) and lr[1] == pytest.approx(0.505) and lr[2] == lr[3] == lr[4] == 1.0
    assert lr[5] == pytest.approx(0.05 ** 0.5) and lr[6] == pytest.approx(0.05) and lr[7] == pytest.approx(0.05)


def test_edit_distance_of_token_lists():
    assert edits(list("KITTEN"), list("SITTING")) == 3  # the textbook pair
    assert edits(list("AB|CD"), list("AB|CD")) == 0
    assert edits([], list("ABC")) == 3 and edits(list("ABC"), []) == 3
    assert edits(["HELLO", "WORLD"], ["HELLO", "WORD", "X"]) == 2


def test_pickled_fairseq_checkpoint_needs_and_takes_trust_pickle(prepared, texts, tmp_path):
    import argparse

    from hubertkit.model.convert import to_fairseq

    ckpt = to_fairseq(HubertModel(preset("tiny", encoder_layers=2)))
    ckpt["args"] = argparse.Namespace(**ckpt.pop("cfg")["model"])  # fairseq's older checkpoints pickle a Namespace
    torch.save(ckpt, tmp_path / "fairseq.pt")
    with pytest.raises(HubertkitError, match="--trust-pickle"):
        run(prepared, texts, tmp_path / "fairseq.pt", tmp_path / "refused", **{"optimization.max_update": 1})
    from hubertkit.cli import parser

    args = parser().parse_args(["finetune", "--config-name", "demo", "--trust-pickle"])
    assert args.trust_pickle  # the flag the message names exists on this command
    r = finetune("demo", [f"task.data={prepared / 'tsv'}", f"task.label_dir={texts}", f"model.w2v_path={tmp_path / 'fairseq.pt'}",
                          f"checkpoint.save_dir={tmp_path / 'ck'}", "dataset.num_workers=0", "optimization.max_update=1",
                          "dataset.max_tokens=150000"], progress=False, trust_pickle=True)
    assert r["num_updates"] == 1


def test_a_resume_with_a_reordered_dictionary_is_refused(prepared, texts, pretrained, tmp_path):
    """prepare-text on more text orders letters by count: the head's rows would be read as
    other letters, and transcripts would swap them."""
    run(prepared, texts, pretrained, tmp_path / "ck", **{"optimization.max_update": 2})
    reordered = tmp_path / "ltr"
    shutil.copytree(texts, reordered)
    lines = (texts / "dict.ltr.txt").read_text().splitlines(keepends=True)
    (reordered / "dict.ltr.txt").write_text("".join([lines[1], lines[0], *lines[2:]]))
    first, second = lines[0].split()[0], lines[1].split()[0]
    with pytest.raises(HubertkitError, match=rf"fine-tuned with other letters than .*dict.ltr.txt \(entry 1 is "
                                             rf"'{re.escape(first)}' there and '{re.escape(second)}' here\)"):
        run(prepared, reordered, pretrained, tmp_path / "ck")
    with pytest.raises(HubertkitError, match="fine-tuned with other letters"):
        run(prepared, reordered, pretrained, tmp_path / "again",
            **{"checkpoint.finetune_from_model": tmp_path / "ck" / "checkpoint_last.pt"})


def test_nan_weights_are_refused_by_every_reader(prepared, texts, pretrained, tmp_path, demo_dir):
    """transcribe, a warm start from a training checkpoint, and a resume: no reader uses a
    NaN weight (an empty transcript, or skipped updates, with exit code 0 before)."""
    from hubertkit.recipes.transcribe import transcribe

    run(prepared, texts, pretrained, tmp_path / "ck", **{"optimization.max_update": 2})
    state = torch.load(tmp_path / "ck" / "checkpoint_last.pt", weights_only=True)
    state["model"]["proj.weight"][0, 0] = float("nan")
    torch.save(state, tmp_path / "ck" / "checkpoint_last.pt")
    nan = "has NaN or infinite weights in 1 tensor\\(s\\), e.g. proj.weight"
    with pytest.raises(HubertkitError, match=nan):
        transcribe(tmp_path / "ck" / "checkpoint_last.pt", [next(demo_dir.rglob("*.flac"))])
    with pytest.raises(HubertkitError, match=nan):
        run(prepared, texts, pretrained, tmp_path / "ck")
    with pytest.raises(HubertkitError, match=nan):
        run(prepared, texts, pretrained, tmp_path / "warm", **{"checkpoint.finetune_from_model": tmp_path / "ck" / "checkpoint_last.pt"})
    for bad, what in ((torch.zeros(3, dtype=torch.int64), "int64"), (torch.zeros(3, dtype=torch.complex64), "complex64"),
                      (torch.zeros(3).to_sparse(), "sparse")):
        state["model"]["proj.bias"] = bad
        torch.save(state, tmp_path / "bad.pt")
        with pytest.raises(HubertkitError, match=f"weight proj.bias is a {what} tensor"):
            transcribe(tmp_path / "bad.pt", [next(demo_dir.rglob("*.flac"))])
