import json

import numpy as np
import pytest
import torch

from hubertkit.cli import main
from hubertkit.config import load_config
from hubertkit.data.unit_dataset import UnitTextDataset
from hubertkit.data.unit_vocab import UnitVocab, dedup, hf_tokenizer, units_text
from hubertkit.errors import HubertkitError
from hubertkit.model.checkpoint import read_checkpoint
from hubertkit.model.unit_asr import load_unit_asr
from hubertkit.recipes.discrete_units import save_units, units_from_labels
from hubertkit.recipes.unit_asr import train_unit_asr, transcribe_units


def _units_files(tsv_dir, label_dir, out):
    """The MFCC k-means labels of the labelled corpus as units JSONL (train, valid)."""
    for split in ("train", "valid"):
        save_units(units_from_labels(tsv_dir / f"{split}.tsv", label_dir / f"{split}.km"), out / f"{split}.jsonl")
    return out / "train.jsonl", out / "valid.jsonl"


@pytest.fixture(scope="module")
def units(labelled, tmp_path_factory):
    return _units_files(labelled / "tsv", labelled / "labels", tmp_path_factory.mktemp("units"))


def _train(units, demo_dir, save, config="bart_demo", extra=()):
    train, valid = units
    return train_unit_asr(train, demo_dir / "alignments.jsonl", valid, config, [
        "optimization.max_update=40", "lr_scheduler.warmup_updates=10", "dataset.validate_interval_updates=20",
        "checkpoint.save_interval_updates=20", "common.log_interval=10", "dataset.max_tokens=1500", *extra,
    ], save_dir=save, progress=False)


def _log(save):
    return [json.loads(l) for l in (save / "train_log.jsonl").read_text().splitlines()]


def test_vocab_and_tokenizer_agree(units, demo_dir):
    data = UnitTextDataset(units[0], demo_dir / "alignments.jsonl")
    vocab = data.vocab
    assert vocab.num_units == 20 and vocab.first_unit == 4 + len(vocab.symbols) and "|" in vocab.symbols
    tok = hf_tokenizer(vocab)
    item = data[0]
    unit_ids = [i - vocab.first_unit for i in item["source"].tolist()]
    assert tok(units_text(unit_ids))["input_ids"] == item["source"].tolist() + [2]
    text = vocab.decode_letters(item["target"].tolist())
    assert text and tok.decode(item["target"].tolist(), skip_special_tokens=True) == text
    assert tok(text_target=" ".join(vocab.letters_of(item["target"].tolist())))["input_ids"] == item["target"].tolist()
    with pytest.raises(HubertkitError, match="outside this model's vocabulary of 20 units"):
        vocab.encode_units([3, 20], "x")
    with pytest.raises(HubertkitError, match="not in the model's letters"):
        UnitVocab(("A", "|"), 5).encode_text("AB", "x")


def test_bart_learns_and_its_folder_needs_no_hubertkit(units, demo_dir, tmp_path):
    result = _train(units, demo_dir, tmp_path / "bart", extra=["optimization.max_update=80"])
    log = _log(tmp_path / "bart")
    train_loss = [r["loss"] for r in log if r["split"] == "train"]
    assert train_loss[-1] < 0.7 * train_loss[0]
    assert {"uer", "wer"} <= set(next(r for r in log if r["split"] == "valid"))
    folder = tmp_path / "bart" / "model"
    assert result["model"] == str(folder) and (folder / "tokenizer.json").is_file()

    ours = transcribe_units(folder, units[1], beam=3, progress=False)
    from transformers import AutoTokenizer, BartForConditionalGeneration

    tok = AutoTokenizer.from_pretrained(folder)
    model = BartForConditionalGeneration.from_pretrained(folder).eval()
    records = [json.loads(l) for l in units[1].read_text().splitlines()]
    texts = [units_text(dedup(r["units"])[0]) for r in records]
    batch = tok(texts, return_tensors="pt", padding=True)
    theirs = tok.batch_decode(model.generate(**batch, num_beams=3), skip_special_tokens=True)
    assert [t.text for t in ours] == theirs
    assert any(t.text for t in ours)
    # the checkpoint and the folder are the same model
    assert [t.text for t in transcribe_units(tmp_path / "bart" / "checkpoint_best.pt", units[1], beam=3, progress=False)] == theirs
    # weights that pickle objects are refused with a message, not a traceback
    import argparse
    import shutil

    from safetensors.torch import load_file

    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    weights = load_file(bad / "model.safetensors")
    (bad / "model.safetensors").unlink()
    torch.save({**weights, "extra": argparse.Namespace(a=1)}, bad / "pytorch_model.bin")
    with pytest.raises(HubertkitError, match="cannot be loaded safely"):
        transcribe_units(bad, units[1], progress=False)


def test_ctc_baseline_and_exact_resume(units, demo_dir, tmp_path):
    fixed = ["lr_scheduler.total_num_update=40"]
    _train(units, demo_dir, tmp_path / "once", "ctc_demo", fixed)
    _train(units, demo_dir, tmp_path / "twice", "ctc_demo", [*fixed, "optimization.max_update=20"])
    _train(units, demo_dir, tmp_path / "twice", "ctc_demo", fixed)
    a, b = (read_checkpoint(tmp_path / d / "checkpoint_last.pt").state for d in ("once", "twice"))
    assert a["trainer"]["num_updates"] == b["trainer"]["num_updates"] == 40
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    loss = [r["loss"] for r in _log(tmp_path / "once") if r["split"] == "train"]
    assert loss[-1] < loss[0]
    model = load_unit_asr(tmp_path / "once" / "checkpoint_last.pt")
    assert model.cfg.arch == "ctc" and model.cfg.ctc_upsample == 2
    out = transcribe_units(tmp_path / "once" / "checkpoint_last.pt", units[1], references=demo_dir / "alignments.jsonl",
                           progress=False)
    assert len(out) == len(units[1].read_text().splitlines()) and all(t.reference for t in out)


def test_audio_to_text_equals_units_to_text(prepared, demo_dir, tmp_path, capsys):
    """A fairseq-layout HuBERT and a fairseq joblib k-means (the seed's kind of files)."""
    import joblib
    from sklearn.cluster import KMeans

    from hubertkit.data.shards import read_shard
    from hubertkit.features.hubert import dump_hubert
    from hubertkit.model import HubertModel, preset
    from hubertkit.model.convert import save_fairseq_checkpoint

    torch.manual_seed(0)
    save_fairseq_checkpoint(HubertModel(preset("tiny", num_classes=[24], label_rate=100)).eval(), tmp_path / "m.pt")
    dump_hubert(prepared / "tsv", "train", tmp_path / "m.pt", 2, 1, 0, tmp_path / "feat", progress=False)
    joblib.dump(KMeans(n_clusters=12, n_init=1, random_state=0).fit(np.asarray(read_shard(tmp_path / "feat", "train", 0, 1).feats)),
                tmp_path / "km.bin")
    hubert = [str(tmp_path / "m.pt"), str(tmp_path / "km.bin")]
    for split in ("train", "valid"):
        main(["units", *hubert, str(prepared / "tsv" / f"{split}.tsv"), "--layer", "2", "--dedup", "--trust-pickle",
              "--out", str(tmp_path / f"{split}.jsonl")])
    units = (tmp_path / "train.jsonl", tmp_path / "valid.jsonl")
    _train(units, demo_dir, tmp_path / "ctc", "ctc_demo", ["optimization.max_update=5", "task.num_units=12"])
    ckpt = str(tmp_path / "ctc" / "checkpoint_last.pt")
    capsys.readouterr()
    main(["unit-asr", "transcribe", ckpt, str(units[1]), "--format", "jsonl", "-q"])
    from_units = [json.loads(l)["text"] for l in capsys.readouterr().out.splitlines()]
    main(["unit-asr", "transcribe", ckpt, "--audio", str(prepared / "tsv" / "valid.tsv"), "--hubert", hubert[0],
          "--km", hubert[1], "--layer", "2", "--trust-pickle", "--format", "jsonl", "-q"])
    from_audio = [json.loads(l)["text"] for l in capsys.readouterr().out.splitlines()]
    assert from_audio == from_units and len(from_units) == len(units[1].read_text().splitlines())
    with pytest.raises(SystemExit):
        main(["unit-asr", "transcribe", ckpt, "--audio", str(prepared / "tsv" / "valid.tsv"), "-q"])
    assert "--hubert" in capsys.readouterr().err


def test_clear_errors(units, demo_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"utt": json.loads(units[1].read_text().splitlines()[0])["utt"], "units": [3, 99]}) + "\n")
    with pytest.raises(HubertkitError, match="unit id 99"):
        UnitTextDataset(bad, demo_dir / "alignments.jsonl", num_units=20)
    with pytest.raises(HubertkitError, match="criterion._name=cross_entropy or label_smoothed_cross_entropy"):
        load_config("bart_demo", ["criterion._name=ctc", "task.data=x", "task.texts=y"], str(_unit_configs()))
    with pytest.raises(HubertkitError, match="task.texts"):
        load_config("bart_demo", ["task.data=x"], str(_unit_configs()))
    with pytest.raises(HubertkitError, match="max_source_positions"):
        _train(units, demo_dir, tmp_path / "short", extra=["model.max_source_positions=8"])
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(HubertkitError, match="holds no utterances"):
        UnitTextDataset(tmp_path / "notes.txt", demo_dir / "alignments.jsonl")


def _unit_configs():
    from hubertkit.config import config_dir_default

    return config_dir_default() / "unit_asr"
