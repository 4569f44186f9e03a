"""The checkpoint format (model/checkpoint.py): every kind written with its kind and
version, old files still read, and every damaged file refused with the file and the
field named, by every command that reads checkpoints, without a traceback."""

import pytest
import torch

from hubertkit.cli import main
from hubertkit.config import preset
from hubertkit.data.text import prepare_text
from hubertkit.errors import HubertkitError
from hubertkit.model.checkpoint import FORMAT, VERSION, read_checkpoint
from hubertkit.model.ctc import HubertCTC, load_ctc, save_ctc
from hubertkit.model.hubert import HubertModel
from hubertkit.model.io import load_model, save_model


def tiny(tmp_path):
    torch.manual_seed(0)
    model = HubertModel(preset("tiny", num_classes=[24])).eval()
    save_model(model, tmp_path / "m.pt")
    return model, tmp_path / "m.pt"


def test_kind_and_version_are_written_and_version_1_files_still_load(tmp_path):
    model, path = tiny(tmp_path)
    state = torch.load(path, weights_only=True)
    assert (state["format"], state["kind"], state["version"]) == (FORMAT, "hubert", VERSION)
    del state["kind"]
    state["version"] = 1  # what hubertkit wrote before kinds
    torch.save(state, tmp_path / "v1.pt")
    assert read_checkpoint(tmp_path / "v1.pt").kind == "hubert"
    back = load_model(tmp_path / "v1.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), back.state_dict().values()))
    save_ctc(HubertCTC(preset("tiny"), list("abc")), tmp_path / "ctc.pt")
    ctc = torch.load(tmp_path / "ctc.pt", weights_only=True)
    assert ctc["kind"] == "ctc"
    del ctc["kind"]
    ctc["format"] = "hubertkit.ctc"  # version 1's name for saved CTC models
    torch.save(ctc, tmp_path / "ctc_v1.pt")
    assert load_ctc(tmp_path / "ctc_v1.pt").symbols == list("abc")


def damage(state: dict, how: str):
    weights = state["model"]
    first = next(iter(weights))
    if how == "no model":
        del state["model"]
    elif how == "no cfg":
        del state["cfg"]
    elif how == "cfg.model not a dict":
        state["cfg"]["model"] = "tiny"
    elif how == "a string where a number belongs":
        state["cfg"]["model"]["encoder_layers"] = "two"
    elif how == "a missing weight":
        del weights[first]
    elif how == "a mis-shaped weight":
        weights[first] = torch.zeros(3, 3)
    elif how == "a weight that is no tensor":
        weights[first] = "zeros"
    elif how == "an unknown kind":
        state["kind"] = "vocoder"
    elif how == "a newer version":
        state["version"] = VERSION + 1
    elif how == "an absurd conv stack":
        state["cfg"]["model"]["conv_feature_layers"] = "[(512,10,5)] * 100000000"
    elif how == "100000 layers":
        state["cfg"]["model"]["encoder_layers"] = 100000
    elif how == "an FFN of 2**31":
        state["cfg"]["model"]["encoder_ffn_embed_dim"] = 2**31
    elif how == "-1 layers":
        state["cfg"]["model"]["encoder_layers"] = -1
    elif how == "fewer layers than weights":
        state["cfg"]["model"]["encoder_layers"] = 1
    elif how == "no format":
        del state["format"]
    elif how in ("an int64 weight", "a bool weight", "a NaN weight"):
        weights[first] = {"an int64 weight": weights[first].long(), "a bool weight": weights[first] > 0,
                          "a NaN weight": weights[first] * float("nan")}[how]
    return state


DAMAGE = ["no model", "no cfg", "cfg.model not a dict", "a string where a number belongs", "a missing weight",
          "a mis-shaped weight", "a weight that is no tensor", "an unknown kind", "a newer version", "an absurd conv stack",
          "100000 layers", "an FFN of 2**31", "-1 layers", "fewer layers than weights", "no format", "an int64 weight",
          "a bool weight", "a NaN weight"]
NAMED = {"no model": "no model", "no cfg": "no cfg", "cfg.model not a dict": "cfg.model is a str",
         "a string where a number belongs": "model.encoder_layers must be an integer, got 'two'",
         "a missing weight": "missing", "a mis-shaped weight": "shapes differ", "a weight that is no tensor": "not a named tensor",
         "an unknown kind": "kind 'vocoder'", "a newer version": f"version-{VERSION + 1}",
         "an absurd conv stack": "repeat count above", "100000 layers": "model.encoder_layers must be in 1..1024",
         "an FFN of 2**31": "model.encoder_ffn_embed_dim must be in 1..262144", "-1 layers": "encoder_layers must be in 1..1024",
         "fewer layers than weights": "unexpected: encoder.layers.1.", "no format": "without its format field",
         "an int64 weight": "is a int64 tensor", "a bool weight": "is a bool tensor", "a NaN weight": "NaN or infinite weights"}


@pytest.mark.parametrize("how", DAMAGE)
def test_damaged_model_checkpoints_are_refused_naming_the_field(tmp_path, how):
    _, path = tiny(tmp_path)
    torch.save(damage(torch.load(path, weights_only=True), how), path)
    with pytest.raises(HubertkitError) as e:
        load_model(path)
    assert str(path) in str(e.value) and NAMED[how] in str(e.value)


@pytest.mark.parametrize("content", [b"", b"\x00" * 100, b"not a checkpoint\n", bytes(range(256)) * 8, b"PK\x03\x04 truncated"])
def test_a_file_that_is_not_a_checkpoint_is_not_told_to_pass_trust_pickle(tmp_path, content):
    (tmp_path / "x.pt").write_bytes(content)
    with pytest.raises(HubertkitError, match="cannot be read as a checkpoint") as e:
        load_model(tmp_path / "x.pt", trust_pickle=True)
    assert "trust-pickle" not in str(e.value)


def test_damaged_ctc_checkpoints_are_refused(tmp_path):
    save_ctc(HubertCTC(preset("tiny"), list("abc")), tmp_path / "ctc.pt")
    state = torch.load(tmp_path / "ctc.pt", weights_only=True)
    for field, value, named in (("symbols", "abc", "symbols is a str"), ("symbols", [1, 2], "list of strings"),
                                ("final_dropout", "0.1", "final_dropout is a str")):
        torch.save({**state, field: value}, tmp_path / "bad.pt")
        with pytest.raises(HubertkitError, match=named):
            load_ctc(tmp_path / "bad.pt")
    with pytest.raises(HubertkitError, match="holds a fine-tuned .CTC. model, not a pretrained HuBERT"):
        load_model(tmp_path / "ctc.pt")
    _, path = tiny(tmp_path)
    with pytest.raises(HubertkitError, match="holds a pretrained HuBERT; transcribing needs a fine-tuned"):
        load_ctc(path)


def cli(capsys, *args) -> str:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("how", ["no cfg", "a mis-shaped weight", "a string where a number belongs"])
def test_every_command_that_reads_a_model_refuses_a_damaged_one(labelled, demo_dir, tmp_path, capsys, how):
    texts = tmp_path / "ltr"
    prepare_text(labelled / "tsv", ["train", "valid"], texts, demo_dir / "alignments.jsonl")
    _, path = tiny(tmp_path)
    torch.save(damage(torch.load(path, weights_only=True), how), path)
    tsv = labelled / "tsv"
    for command in (["export", path, tmp_path / "hf"], ["dump-hubert", tsv, "valid", path, 1, 1, 0, tmp_path / "f"],
                    ["units", path, labelled / "km20.pt", tsv / "valid.tsv", "--layer", 1],
                    ["probe", path, tsv, "--alignments", demo_dir / "alignments.jsonl"],
                    ["finetune", "--config-name", "demo", f"model.w2v_path={path}", f"task.data={tsv}",
                     f"task.label_dir={texts}", f"checkpoint.save_dir={tmp_path / 'ft'}"],
                    ["transcribe", path, tsv, "valid"]):
        err = cli(capsys, *command)
        assert str(path) in err, (command, err)


def test_a_damaged_resume_point_is_refused_before_training(labelled, tmp_path, capsys):
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "checkpoint_last.pt").write_bytes(b"\x00" * 64)
    err = cli(capsys, "train", "--config-name", "demo", f"task.data={labelled / 'tsv'}",
              f"task.label_dir={labelled / 'labels'}", f"checkpoint.save_dir={tmp_path / 'ck'}")
    assert "checkpoint_last.pt cannot be read as a checkpoint" in err


def test_normalize_is_the_models_and_older_files_keep_theirs(tmp_path):
    """The model's config records whether it reads standardised waveforms; a file written
    before that (``cfg.task.normalize`` only) loads with the task's value."""
    model = HubertModel(preset("tiny", num_classes=[24], normalize=True)).eval()
    save_model(model, tmp_path / "m.pt")
    assert load_model(tmp_path / "m.pt").cfg.normalize
    wav = torch.randn(1600) * 3 + 1
    assert torch.allclose(model.prepare(wav), (wav - wav.mean()) / wav.std(unbiased=False), atol=1e-4)
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    del state["cfg"]["model"]["normalize"]  # as hubertkit wrote it before the model recorded it
    for task_normalize in (True, False):
        state["cfg"]["task"]["normalize"] = task_normalize
        torch.save(state, tmp_path / "old.pt")
        assert load_model(tmp_path / "old.pt").cfg.normalize is task_normalize
