import json

import numpy as np
import soundfile as sf
import torch

import hubertkit
from hubertkit.cli import main
from hubertkit.cluster.kmeans import learn_kmeans, load_kmeans
from hubertkit.data.manifest import read_manifest
from hubertkit.data.unit_vocab import dedup
from hubertkit.features.hubert import dump_hubert
from hubertkit.model import HubertModel, preset
from hubertkit.model.io import save_model


def test_dedup():
    assert dedup([3, 3, 1, 1, 1, 3, 2]) == ([3, 1, 3, 2], [2, 3, 1, 1])
    assert dedup([]) == ([], [])


def test_units_are_kmeans_of_layer_features(prepared, tmp_path, capsys):
    torch.manual_seed(0)
    model = HubertModel(preset("tiny", num_classes=[24], label_rate=100)).eval()
    save_model(model, tmp_path / "m.pt")
    dump_hubert(prepared / "tsv", "train", tmp_path / "m.pt", 2, 1, 0, tmp_path / "feat", progress=False)
    learn_kmeans(tmp_path / "feat", "train", 1, tmp_path / "km.pt", 12, progress=False)
    km = load_kmeans(tmp_path / "km.pt")
    tsv = prepared / "tsv" / "valid.tsv"
    records = list(hubertkit.units(tmp_path / "m.pt", tmp_path / "km.pt", tsv, layer=2))
    utts = read_manifest(tsv).utterances
    assert len(records) == len(utts)
    for rec, utt in zip(records, utts):
        wav = torch.from_numpy(sf.read(utt.path, dtype="float32")[0])
        ref = km.predict(model.extract_features(wav[None], layer=2)[0][0].numpy()).tolist()
        assert rec["units"] == ref and utt.path.endswith(rec["utt"])
        assert np.repeat(rec["dedup"], rec["durations"]).tolist() == ref
    main(["units", str(tmp_path / "m.pt"), str(tmp_path / "km.pt"), str(tsv), "--layer", "2", "--dedup"])
    lines = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert [l["units"] for l in lines] == [r["dedup"] for r in records]
    main(["units", str(tmp_path / "m.pt"), str(tmp_path / "km.pt"), str(tsv), "--layer", "2", "--out", str(tmp_path / "u.jsonl")])
    assert [json.loads(l)["units"] for l in (tmp_path / "u.jsonl").read_text().splitlines()] == [r["units"] for r in records]
    # sharded like the dumps: each rank writes u_{rank}_3.jsonl; in rank order they are the whole
    main(["units", str(tmp_path / "m.pt"), str(tmp_path / "km.pt"), str(tsv), "--layer", "2", "--out", str(tmp_path / "u.jsonl"),
          "--nshard", "3", "--rank", "all", "-q"])
    shards = [json.loads(l)["units"] for r in range(3) for l in (tmp_path / f"u_{r}_3.jsonl").read_text().splitlines()]
    assert shards == [r["units"] for r in records]
