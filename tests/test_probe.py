import json

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression, Ridge
from test_cli import hubertkit

from hubertkit.config import preset
from hubertkit.data.alignments import frame_phones, read_alignments
from hubertkit.errors import HubertkitError
from hubertkit.model.hubert import HubertModel
from hubertkit.model.io import save_model
from hubertkit.recipes.probe import (
    linear_classifier_accuracy,
    linear_regression_corr,
    probe_layers,
    probe_table,
    read_probes,
)


def blobs(n, dim=6, classes=4, spread=1.2, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2, (classes, dim))
    y = rng.integers(0, classes, n)
    return centres[y] + rng.normal(0, spread, (n, dim)), y


def test_classifier_probe_matches_scikit_learn():
    x, y = blobs(1200)
    ours = linear_classifier_accuracy(x[:800], y[:800], x[800:], y[800:])
    ref = LogisticRegression(max_iter=2000).fit(x[:800], y[:800]).score(x[800:], y[800:])
    assert 0.6 < ref and abs(ours - ref) < 0.02


def test_unseen_test_classes_count_as_errors():
    x, y = blobs(400, spread=0.1)
    y_test = y[200:].copy()
    y_test[:50] = 99  # a class the train split never had
    acc = linear_classifier_accuracy(x[:200], y[:200], x[200:], y_test)
    assert acc <= 150 / 200


def test_regression_probe_matches_ridge():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 5))
    y = x @ np.array([1.0, -2.0, 0.5, 0.0, 0.0]) + rng.normal(0, 1.0, 600)
    ref = np.corrcoef(Ridge(alpha=1e-6).fit(x[:400], y[:400]).predict(x[400:]), y[400:])[0, 1]
    assert abs(linear_regression_corr(x[:400], y[:400], x[400:], y[400:]) - ref) < 1e-3


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("probe") / "model.pt"
    torch.manual_seed(0)  # the same random weights whatever ran before
    save_model(HubertModel(preset("tiny")), path)
    return path


def test_probe_layers_on_the_demo(random_model, prepared, demo_dir):
    results = probe_layers(random_model, prepared / "tsv", alignments=demo_dir / "alignments.jsonl", progress=False)
    assert [r.layer for r in results] == list(range(preset("tiny").encoder_layers + 1))
    for r in results:
        assert 0 <= r.speaker_acc <= 1 and 0 <= r.phone_acc <= 1 and -1 <= r.f0_corr <= 1
        assert 0 <= r.abx_across <= 1  # the valid split's items (within-speaker cells need repeated contexts)
    assert "ABX across (%)" in probe_table(results)
    # even random convolutions carry phone identity: better than always saying the commonest phone
    align = read_alignments(demo_dir / "alignments.jsonl")
    test_phones = np.concatenate([frame_phones(a, int(a[-1][2] * 50), 50) for k, a in align.items()
                                  if k.split("/")[-1] in (prepared / "tsv" / "valid.tsv").read_text()])
    majority = np.unique(test_phones, return_counts=True)[1].max() / len(test_phones)
    assert results[0].phone_acc > majority + 0.02  # 0.096-0.122 over seeds 0-3, majority 0.073
    # the reported chance levels: the most frequent class (valid phones against train's commonest)
    assert all(r.phone_chance == results[0].phone_chance for r in results)
    assert 0 < results[0].phone_chance <= majority + 0.01  # the probe scores model frames, a few fewer
    assert results[0].speaker_chance == pytest.approx(1 / 8)  # 8 voices, 3 utterances each
    with pytest.raises(HubertkitError, match="layers must be in"):
        probe_layers(random_model, prepared / "tsv", layers=[9], progress=False)


def test_probe_command_writes_table_json_and_plot(random_model, prepared, tmp_path):
    r = hubertkit("probe", random_model, prepared / "tsv", "--layers", "0,2", "--out", tmp_path, "-q")
    assert "| layer | speaker acc | phone acc | F0 corr |" in r.stdout
    assert "| 2 |" in r.stdout and "–" in r.stdout  # no alignments given: no phone probe
    assert [p.layer for p in read_probes(tmp_path / "probe.json")] == [0, 2]
    assert (tmp_path / "probe.png").stat().st_size > 1000
    assert json.loads((tmp_path / "probe.json").read_text())[0]["phone_acc"] is None


def test_at_most_max_utterances_are_encoded(random_model, prepared):
    from hubertkit.model.io import load_model
    from hubertkit.recipes.probe import _encode

    split = _encode(load_model(random_model), prepared / "tsv" / "train.tsv", None, None, 4, progress=False)
    rows = (prepared / "tsv" / "train.tsv").read_text().splitlines()[1:]
    assert len(split.speakers) == len(split.layers[0]) == len(split.pitch) == 4
    assert split.speakers[0] == rows[0].split("/")[0] and split.speakers[-1] == rows[-1].split("/")[0]
