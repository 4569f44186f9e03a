"""The iterative recipe, reduced: every stage runs, outputs are valid, a crashed run
resumes at the stage that failed, and the report carries PNMI."""

import json
import re
from dataclasses import replace

import pytest

import hubertkit.recipes.pipeline as pipeline_module
from hubertkit.config.pipeline import parse_pipeline
from hubertkit.errors import HubertkitError
from hubertkit.recipes.pipeline import run_pipeline

FAST = ["optimization.max_update=4", "lr_scheduler.total_num_update=4", "dataset.num_workers=0",
        "dataset.max_tokens=200000", "task.max_sample_size=40000", "model.encoder_layers=2"]


def config(small_corpus, demo_dir, out, **extra):
    tree = {
        "corpus": str(small_corpus), "alignments": str(demo_dir / "alignments.jsonl"), "out": str(out),
        "valid_percent": 0.25, "seed": 1, "nshard": 1, "jobs": 1,
        "iterations": [
            {"name": "iter1", "features": "mfcc", "n_clusters": 20, "label_rate": 100, "train_overrides": FAST},
            {"name": "iter2", "features": "hubert", "layer": 1, "n_clusters": 10, "label_rate": 50, "train_overrides": FAST},
        ],
        **extra,
    }
    return parse_pipeline(tree)


def test_pipeline_runs_and_resumes_after_a_crash(small_corpus, demo_dir, tmp_path, monkeypatch):
    cfg = config(small_corpus, demo_dir, tmp_path / "out")
    real = pipeline_module.learn_kmeans

    def crash_in_iter2(feat_dir, *a, **kw):
        if "iter2" in str(feat_dir):
            raise RuntimeError("simulated crash")
        return real(feat_dir, *a, **kw)

    monkeypatch.setattr(pipeline_module, "learn_kmeans", crash_in_iter2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_pipeline(cfg, progress=False, log=lambda s: None)
    monkeypatch.setattr(pipeline_module, "learn_kmeans", real)
    result = run_pipeline(cfg, progress=False, log=lambda s: None)
    assert result["ran"] == ["iter2.kmeans", "iter2.labels", "iter2.quality", "iter2.train"]
    out = tmp_path / "out"
    for it, k in (("iter1", 20), ("iter2", 10)):
        q = json.loads((out / it / "quality.json").read_text())
        assert 0 < q["valid"]["pnmi"] < 1
        assert (out / it / "labels" / "dict.km.txt").read_text().count("\n") == k
        assert (out / it / "checkpoints" / "checkpoint_last.pt").is_file()
    # iteration 2's labels are at 50 Hz: one label per 20 ms frame of the audio
    first = (out / "iter2" / "labels" / "train.km").read_text().splitlines()[0].split()
    samples = int((out / "manifest" / "train.tsv").read_text().splitlines()[1].split("\t")[1])
    assert len(first) == (samples - 400) // 320 + 1
    report = (out / "report.md").read_text()
    assert "iter2" in report and (out / "label_quality.png").is_file() and (out / "phone_cluster_iter2.png").is_file()
    # the report explains itself: what the numbers mean, chance levels, corpus, times, versions, config
    assert "How to read these numbers" in report and "torch " in report and "## Time per stage" in report
    assert "| iter1.train |" in report and "train_overrides:" in report and "| train | " in report
    pnmi, chance = (float(v) for v in re.search(r"\| iter1 \| MFCC \|[^|]*\|[^|]*\| ([\d.]+) \(([\d.]+)\)", report).groups())
    assert pnmi == pytest.approx(json.loads((out / "iter1" / "quality.json").read_text())["valid"]["pnmi"], abs=1e-4)
    assert 0 <= chance < pnmi  # shuffled labels score below the real ones
    # a third run does nothing but the report
    assert run_pipeline(cfg, progress=False, log=lambda s: None)["ran"] == []


def test_until_and_changed_settings(small_corpus, demo_dir, tmp_path):
    cfg = config(small_corpus, demo_dir, tmp_path / "out")
    r = run_pipeline(cfg, until="iter1.labels", progress=False, log=lambda s: None)
    assert r["stopped"] == "iter1.labels" and r["ran"] == ["manifest", "iter1.features", "iter1.kmeans", "iter1.labels"]
    cfg = replace(cfg, iterations=[replace(cfg.iterations[0], n_clusters=15), *cfg.iterations[1:]])  # re-runs k-means
    r = run_pipeline(cfg, until="iter1.labels", progress=False, log=lambda s: None)
    assert r["ran"] == ["iter1.kmeans", "iter1.labels"]
    with pytest.raises(HubertkitError, match="not a stage"):
        run_pipeline(cfg, until="iter9", progress=False, log=lambda s: None)


def test_config_errors(small_corpus, demo_dir, tmp_path):
    with pytest.raises(HubertkitError, match="did you mean n_clusters"):
        parse_pipeline({"corpus": "x", "iterations": [{"n_cluster": 5}]})
    with pytest.raises(HubertkitError, match="need a 'layer'"):
        parse_pipeline({"corpus": "x", "iterations": [{"features": "hubert", "layer": 2}]})


def test_disentangle_comparison_lands_in_the_report(small_corpus, demo_dir, tmp_path):
    extra = {"disentangle": {"iteration": "iter1", "train_overrides": ["model.pitch_layer=2"]}}
    tree_iters = [{"name": "iter1", "features": "mfcc", "n_clusters": 20, "label_rate": 100, "train_overrides": FAST}]
    cfg = config(small_corpus, demo_dir, tmp_path / "out", **extra)
    cfg = replace(cfg, iterations=parse_pipeline({"corpus": ".", "iterations": tree_iters}).iterations)
    result = run_pipeline(cfg, progress=False, log=lambda s: None)
    assert result["ran"][-3:] == ["disentangle.pitch", "disentangle.train", "disentangle.probe"]
    out = tmp_path / "out"
    summary = json.loads((out / "disentangled" / "probe" / "summary.json").read_text())
    assert summary["speaker_layer"] == 2 and set(summary["pnmi"]) == {"plain", "disentangled"}
    report = (out / "report.md").read_text()
    assert "## Disentangling" in report and "| 2 (adversary) |" in report
    assert (out / "disentangled" / "probe" / "probes.png").is_file()
    # the disentangled model shares the plain one's labels and budget
    ck = json.loads((out / "stages" / "disentangle.train.json").read_text())["inputs"]["overrides"]
    assert any(o.startswith("task.label_dir=") and "iter1" in o for o in ck) and "optimization.max_update=4" in ck
    with pytest.raises(HubertkitError, match="not an iteration"):
        config(small_corpus, demo_dir, tmp_path / "x", disentangle={"iteration": "iter9"})


def test_unit_asr_per_iteration_lands_in_the_report(small_corpus, demo_dir, tmp_path):
    extra = {"unit_asr": {"texts": str(demo_dir / "alignments.jsonl"), "train_config": "ctc_demo",
                          "train_overrides": ["optimization.max_update=3", "dataset.validate_interval_updates=3"]}}
    cfg = config(small_corpus, demo_dir, tmp_path / "out", **extra)
    result = run_pipeline(cfg, progress=False, log=lambda s: None)
    assert result["ran"][-2:] == ["unit_asr.iter1", "unit_asr.iter2"]
    out = tmp_path / "out"
    for it in ("iter1", "iter2"):
        scores = json.loads((out / "unit_asr" / it / "scores.json").read_text())
        units = [json.loads(l) for l in (out / "unit_asr" / it / "valid.jsonl").read_text().splitlines()]
        labels = (out / it / "labels" / "valid.km").read_text().splitlines()
        assert scores["updates"] == 3 and scores["cer"] >= 0 and scores["utterances"] == len(labels)
        assert [u["units"] for u in units] == [[int(x) for x in l.split()] for l in labels]
    assert "## Unit-based ASR" in (out / "report.md").read_text()
    assert run_pipeline(cfg, progress=False, log=lambda s: None)["ran"] == []
    with pytest.raises(HubertkitError, match="not iterations"):
        config(small_corpus, demo_dir, tmp_path / "x", unit_asr={"texts": "t", "iterations": ["iter9"]})
    with pytest.raises(HubertkitError, match="needs 'texts'"):
        config(small_corpus, demo_dir, tmp_path / "x", unit_asr={})


def test_a_given_manifest_replaces_the_random_split(prepared, small_corpus, demo_dir, tmp_path):
    """manifest: DIR (e.g. held-out speakers) is copied; a changed manifest re-runs the stages after it."""
    given = tmp_path / "given"
    given.mkdir()
    for split in ("train", "valid"):
        (given / f"{split}.tsv").write_text((prepared / "tsv" / f"{split}.tsv").read_text())
    cfg = config(small_corpus, demo_dir, tmp_path / "out", manifest=str(given))
    cfg = replace(cfg, iterations=cfg.iterations[:1])
    run_pipeline(cfg, until="iter1.features", progress=False, log=lambda s: None)
    for split in ("train", "valid"):
        assert (tmp_path / "out" / "manifest" / f"{split}.tsv").read_text() == (given / f"{split}.tsv").read_text()
    rows = (given / "valid.tsv").read_text().splitlines()
    (given / "valid.tsv").write_text("\n".join(rows[:-1]) + "\n")  # one utterance fewer
    result = run_pipeline(cfg, until="iter1.features", progress=False, log=lambda s: None)
    assert result["ran"] == ["manifest", "iter1.features"]
    (given / "train.tsv").unlink()
    with pytest.raises(HubertkitError, match="needs train.tsv and valid.tsv"):
        run_pipeline(cfg, progress=False, log=lambda s: None)


def test_changed_inputs_or_outputs_rerun_their_stage(small_corpus, demo_dir, tmp_path):
    """Skipped only when inputs and outputs are unchanged: new audio makes a new manifest,
    a deleted output is made again, a corrupt stage record is not trusted."""
    import shutil

    corpus = tmp_path / "corpus"
    shutil.copytree(small_corpus, corpus)
    cfg = config(corpus, demo_dir, tmp_path / "out")
    cfg = replace(cfg, iterations=cfg.iterations[:1])
    quiet = dict(progress=False, log=lambda s: None)
    assert run_pipeline(cfg, until="iter1.kmeans", **quiet)["ran"] == ["manifest", "iter1.features", "iter1.kmeans"]
    assert run_pipeline(cfg, until="iter1.kmeans", **quiet)["ran"] == []
    shutil.rmtree(tmp_path / "out" / "iter1" / "features")
    assert run_pipeline(cfg, until="iter1.kmeans", **quiet)["ran"] == ["iter1.features"]
    (tmp_path / "out" / "stages" / "iter1.kmeans.json").write_text("{not json")
    assert run_pipeline(cfg, until="iter1.kmeans", **quiet)["ran"] == ["iter1.kmeans"]
    speaker = next(p for p in corpus.iterdir() if p.is_dir())
    extra = next(p for p in (demo_dir / speaker.name).glob("*.flac") if not (speaker / p.name).exists())
    shutil.copy(extra, speaker / extra.name)  # one more recording
    assert run_pipeline(cfg, until="iter1.kmeans", **quiet)["ran"] == ["manifest", "iter1.features", "iter1.kmeans"]
    rows = sum(len((tmp_path / "out" / "manifest" / f"{s}.tsv").read_text().splitlines()) - 1 for s in ("train", "valid"))
    assert rows == 25


@pytest.mark.parametrize("tree,message", [
    ({"nshard": "two"}, "nshard: Value 'two'"),
    ({"iterations": [{"features": "mfcc", "n_clusters": "many"}]}, r"iterations\[1\].n_clusters: Value 'many'"),
    ({"iterations": 5}, "'iterations' must be a list"),
])
def test_wrong_types_stop_before_the_first_stage(small_corpus, demo_dir, tmp_path, tree, message):
    base = {"corpus": str(small_corpus), "out": str(tmp_path / "out"), "iterations": [{"features": "mfcc"}]}
    with pytest.raises(HubertkitError, match=message):
        parse_pipeline({**base, **tree})
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text,message", [
    ("corpus: [unclosed\n", "is not valid YAML at line"),
    ("- just\n- a list\n", "must be a mapping"),
    (b"corpus: caf\xe9\n", "is not UTF-8"),
])
def test_malformed_yaml_is_an_error_naming_the_file(tmp_path, text, message):
    from hubertkit.config.pipeline import load_pipeline

    path = tmp_path / "p.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(HubertkitError, match=f"p.yaml {message}" if "UTF" not in message else message):
        load_pipeline(path)


def test_a_train_stage_whose_labels_changed_starts_from_scratch(small_corpus, demo_dir, tmp_path):
    """New labels (another seed, another K) must train a new model: resuming the finished
    checkpoint would run 0 updates and hand iteration 2 the model of the old labels."""
    import torch

    cfg = config(small_corpus, demo_dir, tmp_path / "out")
    cfg = replace(cfg, iterations=cfg.iterations[:1])
    quiet = dict(until="iter1.train", progress=False, log=lambda s: None)
    run_pipeline(cfg, **quiet)
    ck = tmp_path / "out" / "iter1" / "checkpoints"
    before = torch.load(ck / "checkpoint_last.pt", weights_only=True)["model"]
    cfg = replace(cfg, seed=2)
    assert run_pipeline(cfg, **quiet)["ran"][-1] == "iter1.train"
    after = torch.load(ck / "checkpoint_last.pt", weights_only=True)
    assert after["trainer"]["num_updates"] == 4
    assert not torch.equal(after["model"]["label_embs_concat"], before["label_embs_concat"])  # trained anew
    assert (tmp_path / "out" / "iter1" / "checkpoints.stale" / "checkpoint_last.pt").is_file()  # the old work kept aside
    cfg = replace(cfg, iterations=[replace(cfg.iterations[0], n_clusters=15)])  # another class count: no "use another save_dir"
    assert run_pipeline(cfg, **quiet)["ran"][-3:] == ["iter1.labels", "iter1.quality", "iter1.train"]
    assert torch.load(ck / "checkpoint_last.pt", weights_only=True)["model"]["label_embs_concat"].shape[0] == 19


def test_a_given_manifest_reruns_when_its_audio_changes(prepared, small_corpus, demo_dir, tmp_path):
    import shutil

    import soundfile as sf

    corpus = tmp_path / "corpus"
    shutil.copytree(small_corpus, corpus)
    given = tmp_path / "given"
    given.mkdir()
    for split in ("train", "valid"):
        rows = (prepared / "tsv" / f"{split}.tsv").read_text().splitlines()
        (given / f"{split}.tsv").write_text("\n".join([str(corpus), *rows[1:]]) + "\n")
    cfg = config(corpus, demo_dir, tmp_path / "out", manifest=str(given))
    cfg = replace(cfg, iterations=cfg.iterations[:1])
    quiet = dict(until="iter1.features", progress=False, log=lambda s: None)
    run_pipeline(cfg, **quiet)
    first = corpus / (given / "train.tsv").read_text().splitlines()[1].split("\t")[0]
    wav, sr = sf.read(first)
    sf.write(first, wav[::-1], sr)  # same length, other content
    assert run_pipeline(cfg, **quiet)["ran"] == ["manifest", "iter1.features"]


def test_layer_auto_chooses_by_valid_pnmi_and_init_previous_warm_starts(small_corpus, demo_dir, tmp_path):
    import torch

    cfg = config(small_corpus, demo_dir, tmp_path / "out")
    cfg = replace(cfg, iterations=[cfg.iterations[0], replace(cfg.iterations[1], layer="auto", init="previous")])
    result = run_pipeline(cfg, progress=False, log=lambda s: None)
    assert "iter2.layer" in result["ran"]
    out = tmp_path / "out"
    choice = json.loads((out / "iter2" / "layer_choice.json").read_text())
    scores = {int(k): v for k, v in choice["valid_pnmi"].items()}
    assert sorted(scores) == [1, 2] and choice["chosen"] == max(scores, key=scores.get)
    assert all(0 <= v <= 1 for layer in choice["valid_abx"].values() for v in layer.values())  # beside PNMI
    assert f"layer {choice['chosen']} was taken" in (out / "report.md").read_text()
    # iteration 2 starts from iteration 1's final model (its trainer test: test_trainer.py), with a new label set
    args = json.loads((out / "stages" / "iter2.train.json").read_text())["inputs"]["overrides"]
    assert f"checkpoint.finetune_from_model={out / 'iter1' / 'checkpoints' / 'checkpoint_best.pt'}" in args
    it2 = torch.load(out / "iter2" / "checkpoints" / "checkpoint_last.pt", weights_only=True)["model"]
    assert it2["label_embs_concat"].shape[0] == 14  # K=10 + fairseq's 4 specials, where iter1 had 24


@pytest.mark.parametrize("it2, message", [
    ({"layer": "best"}, "layer must be a layer number"),
    ({"layer": "auto", "init": "previous"}, None),
    ({"init": "warm"}, "init must be 'scratch' or 'previous'"),
    ({"layer_metric": "purity"}, "layer_metric must be 'pnmi' or 'abx'"),
    ({"features": "mfcc"}, "MFCC features have none"),
])
def test_layer_and_init_values_are_checked(small_corpus, demo_dir, tmp_path, it2, message):
    tree = {"corpus": str(small_corpus), "iterations": [{"features": "mfcc"}, {"features": "hubert", "layer": 1, **it2}]}
    if message:
        with pytest.raises(HubertkitError, match=message):
            parse_pipeline(tree)
    else:  # auto without alignments
        with pytest.raises(HubertkitError, match="needs 'alignments'"):
            parse_pipeline(tree)
        assert parse_pipeline({**tree, "alignments": "a.jsonl"}).iterations[1].layer == "auto"


@pytest.mark.parametrize("change, message", [
    ((0, {"train_config": "nosuchconfig"}), "nosuchconfig"),
    ((1, {"train_overrides": ["model.mask_porb=0.5"]}), "model.mask_porb"),
    ((1, {"train_overrides": ["optimization.max_update=-1"]}), "optimization.max_update"),
    ((1, {"layer": 99}), "iteration iter2: layer 99, but iter1's model has 2 layers"),
    ((1, {"label_rate": 100.0}), "iteration iter2: label_rate 100.0, but labels from a layer of iter1's model come at its "
                                 "frame rate, 50 Hz: set label_rate: 50"),
])
def test_a_bad_training_config_stops_before_the_first_stage(small_corpus, demo_dir, tmp_path, change, message):
    cfg = config(small_corpus, demo_dir, tmp_path / "out")
    (i, values), its = change, list(cfg.iterations)
    if "train_overrides" in values:
        values = {"train_overrides": [*its[i].train_overrides, *values["train_overrides"]]}
    its[i] = replace(its[i], **values)
    cfg = replace(cfg, iterations=its)
    with pytest.raises(HubertkitError, match=message):
        run_pipeline(cfg, progress=False, log=lambda s: None)
    assert not (tmp_path / "out" / "stages").exists()  # not one stage ran


def test_iteration_names_stay_inside_out_and_an_empty_until_is_refused(small_corpus, demo_dir, tmp_path):
    tree = {"corpus": str(small_corpus), "iterations": [{"name": "../escape", "features": "mfcc"}]}
    with pytest.raises(HubertkitError, match="iteration name '../escape'"):
        parse_pipeline(tree)
    with pytest.raises(HubertkitError, match="--until '' is not a stage"):
        run_pipeline(config(small_corpus, demo_dir, tmp_path / "out"), until="", progress=False, log=lambda s: None)


def test_a_refusal_inside_a_stage_names_the_stage(tmp_path):
    """layer: auto on a valid split too small for ABX stopped naming no stage."""
    from hubertkit.recipes.pipeline import Stages

    def refuse():
        raise HubertkitError("no ABX triplet")

    with pytest.raises(HubertkitError, match=r"^stage iter2\.layer: no ABX triplet$"):
        Stages(tmp_path, 1, None, lambda s: None).run("iter2.layer", {}, refuse)
    assert not (tmp_path / "stages" / "iter2.layer.json").exists()


def test_every_pipeline_key_has_its_help_and_rules_on_its_field(capsys):
    """The pipeline config's keys are declared as the training config's are: ``key(...)``
    with a help line, and ``hubertkit pipeline --help-config`` lists them all."""
    import dataclasses

    from hubertkit.cli import main
    from hubertkit.config.pipeline import SECTIONS

    with pytest.raises(SystemExit) as e:
        main(["pipeline", "--help-config"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    for group, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{group}.{f.name} has no help"
            assert f"{group + '.' if group else ''}{f.name} = " in out
    with pytest.raises(HubertkitError, match=r"iterations\[1\].n_clusters must be >= 1, got 0"):
        parse_pipeline({"corpus": "c", "iterations": [{"features": "mfcc", "n_clusters": 0}]})
