"""ABX against the ZeroSpeech team's own implementation (zerospeech-libriabx: its groups,
triplets, distances and averaging, with its Cython DTW compiled here against this
numpy), on random features and on one-hot units (where exact ties are common); the item
table from alignments; the command on the espeak corpus."""

import importlib.util
import json
import os
import shutil
import sys
import types

import numpy as np
import pytest
import torch

from hubertkit.cluster.abx import (Items, abx_error_rates, dtw_distances, items_from_alignments, read_item_file,
                                   write_item_file)
from hubertkit.errors import HubertkitError


@pytest.fixture(scope="session")
def reference_abx(tmp_path_factory):
    """libri-light's ABX() from zerospeech-libriabx; skipped with the reason where it cannot run."""
    if importlib.util.find_spec("libriabx") is None:
        pytest.skip("zerospeech-libriabx is not installed (make test installs it with --no-deps)")
    try:
        import pyximport
    except ImportError:
        pytest.skip("Cython is needed to compile the reference's DTW")
    build = tmp_path_factory.mktemp("abx_reference")
    pyx = importlib.util.find_spec("libriabx").submodule_search_locations[0] + "/libri_light/ABX_src/dtw.pyx"
    shutil.copy(pyx, build / "abx_reference_dtw.pyx")  # its shipped binary was built for numpy 1
    pyximport.install(setup_args={"include_dirs": np.get_include()}, build_dir=str(build / "b"), language_level=3)
    sys.path.insert(0, str(build))
    try:
        import abx_reference_dtw
    except Exception as e:  # no compiler, no headers
        pytest.skip(f"the reference's DTW does not compile here: {e}")
    finally:
        sys.path.remove(str(build))
    sys.modules["libri_light_dtw"] = abx_reference_dtw
    sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))  # imported by its CPC loader only
    from libriabx.libri_light.eval_ABX import ABX

    return ABX


def random_case(seed: int, onehot: bool):
    """8 files of 4 speakers, 4 s at 100 frames/s; tokens of 3 to 11 frames with 3 phones
    in 4 contexts; 5 % of the frames all zero (the reference's singular case)."""
    rng = np.random.default_rng(seed)
    feats, rows = {}, []
    for spk in range(4):
        for f in range(2):
            key = f"s{spk}/u{f}"
            if onehot:
                x = np.eye(6, dtype=np.float32)[rng.integers(0, 6, 400)]
            else:
                x = rng.standard_normal((400, 8)).astype(np.float32)
                x[rng.random(400) < 0.05] = 0
            feats[key] = x
            t = 0.05
            while t < 3.8:
                length = rng.integers(3, 12) / 100
                rows.append((key, t, t + length, "abc"[rng.integers(3)], "xy"[rng.integers(2)], "xz"[rng.integers(2)], f"spk{spk}"))
                t += length + 0.02
    files, on, off, ph, pr, nx, sp = zip(*rows)
    return feats, Items(list(files), np.array(on), np.array(off), list(ph), list(pr), list(nx), list(sp))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("onehot", [False, True])
def test_error_rates_equal_the_reference(reference_abx, tmp_path, seed, onehot):
    """No subsampling on either side (groups and X speakers below the limits), so the two
    must agree: to 0.1 percentage point, the issue's bound; the dot products are summed in
    another order (matmul here, broadcast there), which moves a distance by a float32 ulp
    and can only flip a comparison between two distances closer than that."""
    feats, items = random_case(seed, onehot)
    write_item_file(items, tmp_path / "x.item")
    ours = abx_error_rates(feats, read_item_file(tmp_path / "x.item"), 100, max_size_group=1000, max_x_across=1000)
    theirs = reference_abx(lambda k: torch.from_numpy(feats[k].copy()), str(tmp_path / "x.item"), [(k, k) for k in feats],
                           "cosine", 100, ["within", "across"], max_x_across=1000, max_size_group=1000)
    for mode in ("within", "across"):
        assert abs(ours[mode] - theirs[mode]) < 1e-3, (mode, ours, theirs)
    assert 0.3 < ours["within"] < 0.7  # random features: near chance


def test_a_representation_that_separates_phones_scores_near_zero():
    feats, items = random_case(0, False)
    for key in feats:  # overwrite each token's frames with its phone's direction plus noise
        feats[key] = np.zeros_like(feats[key])
    rng = np.random.default_rng(1)
    for f, a, b, p in zip(items.files, items.onset, items.offset, items.phone):
        feats[f][int(a * 100) : int(b * 100) + 1] = np.eye(8, dtype=np.float32)["abc".index(p)] + 0.1 * rng.standard_normal(8)
    r = abx_error_rates(feats, items, 100)
    assert r["within"] < 0.02 and r["across"] < 0.02


def test_items_from_alignments_keep_phones_between_phones():
    aligned = {"spk1/a": [("sil", 0, 0.1), ("K", 0.1, 0.2), ("AE", 0.2, 0.3), ("T", 0.3, 0.4), ("+NSN+", 0.4, 0.5),
                          ("S", 0.5, 0.6), ("IH", 0.6, 0.7), ("T", 0.7, 0.8)]}
    items = items_from_alignments(aligned, {"spk1/a": "spk1"})
    assert list(zip(items.phone, items.prev, items.next)) == [("AE", "K", "T"), ("IH", "S", "T")]
    assert items.onset.tolist() == [0.2, 0.6] and items.speaker == ["spk1", "spk1"]


def test_bad_items_are_refused(tmp_path):
    (tmp_path / "bad.item").write_text("#header\nf 0.1 0.2 a b c\n")
    with pytest.raises(HubertkitError, match="bad.item:2: expected 'file onset offset phone prev next speaker'"):
        read_item_file(tmp_path / "bad.item")
    feats, items = random_case(0, False)
    with pytest.raises(HubertkitError, match="no item of the item file falls on the features"):
        abx_error_rates({"other": feats["s0/u0"]}, items, 100)


def test_command_on_a_dump_units_and_a_model(labelled, demo_dir, tmp_path, capsys):
    """The espeak corpus: MFCC dump (rate read from its lengths: 100), its k-means labels
    as one-hot units and as centroids, and a tiny model's layers, with the items written."""
    from hubertkit.cli import main
    from hubertkit.model import HubertModel, preset
    from hubertkit.model.io import save_model

    common = [str(labelled / "tsv"), "train", "--alignments", str(demo_dir / "alignments.jsonl"), "-q"]
    main(["abx", str(labelled / "feat"), *common, "--out", str(tmp_path / "mfcc.json"), "--write-item", str(tmp_path / "a.item")])
    mfcc = json.loads((tmp_path / "mfcc.json").read_text())
    assert set(mfcc["scores"]) == {"features"} and 0 < mfcc["scores"]["features"]["across"] < 0.5
    assert len(read_item_file(tmp_path / "a.item")) == mfcc["items"]
    main(["abx", str(labelled / "labels" / "train.km"), *common, "--out", str(tmp_path / "units.json")])
    main(["abx", str(labelled / "labels" / "train.km"), *common, "--km", str(labelled / "km20.pt"), "--mode", "across"])
    assert "| units |" in capsys.readouterr().out
    torch.manual_seed(0)
    save_model(HubertModel(preset("tiny", num_classes=[24], label_rate=100)), tmp_path / "m.pt")
    main(["abx", str(tmp_path / "m.pt"), *common, "--out", str(tmp_path / "m.json")])
    assert list(json.loads((tmp_path / "m.json").read_text())["scores"]) == [f"layer {i}" for i in range(4)]
    with pytest.raises(SystemExit):
        main(["abx", str(tmp_path / "m.pt"), *common, "--layer", "9"])
    assert "--layer must be in 0..3" in capsys.readouterr().err


def abx_refusal(capsys, *args):
    """``hubertkit abx ARGS`` exits 2 with a message (no traceback); the message."""
    from hubertkit.cli import main

    with pytest.raises(SystemExit) as e:
        main(["abx", *map(str, args), "-q"])
    assert e.value.code == 2
    return capsys.readouterr().err


def units_jsonl(labelled, path, transform=lambda line: [int(t) for t in line.split()]):
    from hubertkit.data.manifest import read_manifest

    manifest = read_manifest(labelled / "tsv" / "train.tsv")
    lines = (labelled / "labels" / "train.km").read_text().splitlines()
    path.write_text("".join(json.dumps({"utt": os.path.relpath(u.path, manifest.root), "units": transform(line)}) + "\n"
                            for u, line in zip(manifest.utterances, lines)))
    return path


def test_non_finite_features_and_bad_units_are_refused(labelled, demo_dir, tmp_path, capsys):
    common = [labelled / "tsv", "train", "--alignments", demo_dir / "alignments.jsonl"]
    shutil.copytree(labelled / "feat", tmp_path / "feat")
    for name, value in (("nan", np.nan), ("inf", np.inf)):
        feats = np.load(labelled / "feat" / "train_1_2.npy")
        feats[100:110] = value
        np.save(tmp_path / "feat" / "train_1_2.npy", feats)
        assert "hold NaN or infinite values (10 of" in abx_refusal(capsys, tmp_path / "feat", *common)
    km = (labelled / "labels" / "train.km").read_text().splitlines()
    (tmp_path / "neg.km").write_text("\n".join(["-1 " + km[0], *km[1:]]) + "\n")
    assert "neg.km:1: labels must be non-negative integers" in abx_refusal(capsys, tmp_path / "neg.km", *common)
    assert "neg.km:1" in abx_refusal(capsys, tmp_path / "neg.km", *common, "--km", labelled / "km20.pt")
    for name, transform, message in (
        ("negative", lambda line: [-1] + [int(t) for t in line.split()], "unit ids must be non-negative integers below 2**63, got -1"),
        ("float", lambda line: [float(t) + 0.5 for t in line.split()], "units must be a list of integers"),
        ("text", lambda line: line, "units must be a list of integers"),
    ):
        path = units_jsonl(labelled, tmp_path / f"{name}.jsonl", transform)
        assert f"{name}.jsonl:1: {message}" in abx_refusal(capsys, path, *common)
    (tmp_path / "broken.jsonl").write_text('{"utt": "f1/f1_000", "units": [1, 2]}\n{"utt": \n')
    assert "broken.jsonl:2: expected {'utt': ..., 'units': [...]}" in abx_refusal(capsys, tmp_path / "broken.jsonl", *common)
    (tmp_path / "nokey.jsonl").write_text('{"utt": "f1/f1_000"}\n')
    assert "nokey.jsonl:1: expected" in abx_refusal(capsys, tmp_path / "nokey.jsonl", *common)


def test_huge_unit_ids_score_as_their_ranks(labelled, demo_dir, tmp_path):
    """One-hot frames compare only by equality: ids times 10^12 (a 3.6 TiB one-hot before)
    score exactly as the ids themselves."""
    from hubertkit.recipes.abx import abx

    kw = dict(alignments=demo_dir / "alignments.jsonl", progress=False)
    small = abx(units_jsonl(labelled, tmp_path / "a.jsonl"), labelled / "tsv", "train", **kw)
    huge = abx(units_jsonl(labelled, tmp_path / "b.jsonl", lambda line: [int(t) * 10**12 + 7 for t in line.split()]),
               labelled / "tsv", "train", **kw)
    assert huge["scores"] == small["scores"] and 0 < small["scores"]["units"]["across"] < 0.5, small


@pytest.mark.parametrize("flag, value, message", [
    ("--rate", "nan", "--rate must be a positive number"), ("--rate", "0", "--rate must be a positive number"),
    ("--rate", "-100", "--rate must be a positive number"), ("--max-size-group", "0", "--max-size-group must be at least 2"),
    ("--max-x-across", "0", "--max-x-across must be at least 1"), ("--seed", "-1", "--seed must be a non-negative"),
])
def test_out_of_range_options_are_refused_before_any_work(tmp_path, capsys, flag, value, message):
    # the paths need not exist: the options are checked first
    assert message in abx_refusal(capsys, tmp_path / "feat", tmp_path, "train", "--alignments", tmp_path / "a.jsonl", flag, value)


def test_bad_item_files_and_alignment_times_are_refused(tmp_path):
    (tmp_path / "latin1.item").write_bytes("#h\nf 0.1 0.2 \xe9 b c s\n".encode("latin-1"))
    with pytest.raises(HubertkitError, match="latin1.item is not UTF-8 text"):
        read_item_file(tmp_path / "latin1.item")
    for times in ("nan 0.2", "0.1 inf", "0.3 0.2"):
        (tmp_path / "t.item").write_text(f"#h\nf {times} a b c s\n")
        with pytest.raises(HubertkitError, match="t.item:2: .*must be finite, 0 <= onset < offset"):
            read_item_file(tmp_path / "t.item")
    aligned = {"s/a": [("K", 0.1, 0.2), ("AE", 0.2, float("inf")), ("T", 0.3, 0.4)]}
    with pytest.raises(HubertkitError, match="alignment of s/a has a phone 'AE' at a non-finite time"):
        items_from_alignments(aligned, {"s/a": "s"})


def test_one_speaker_cannot_be_scored_across_speakers():
    feats, items = random_case(0, False)
    items.speaker = ["s0"] * len(items)
    with pytest.raises(HubertkitError, match=r"no across-speaker ABX triplet.*1 speaker\(s\).*--mode within"):
        abx_error_rates(feats, items, 100)
    assert set(abx_error_rates(feats, items, 100, modes=("within",))) == {"within"}


def _one_dtw(x: np.ndarray, y: np.ndarray) -> float:
    """zerospeech-libriabx's DTW, one pair at a time: cost over path length, the path
    walked back preferring the diagonal, then left, then up."""
    d = np.arccos(np.clip(x @ y.T, -1, 1)) / np.pi
    n, m = d.shape
    cost = np.zeros((n, m))
    for i in range(n):
        for j in range(m):
            prior = [c for c in ((cost[i - 1, j] if i else None), (cost[i, j - 1] if j else None),
                                 (cost[i - 1, j - 1] if i and j else None)) if c is not None]
            cost[i, j] = d[i, j] + (min(prior) if prior else 0.0)
    i, j, steps = n - 1, m - 1, 1
    while i > 0 and j > 0:
        up, left, diag = cost[i - 1, j], cost[i, j - 1], cost[i - 1, j - 1]
        if diag <= left and diag <= up:
            i, j = i - 1, j - 1
        elif left <= up:
            j -= 1
        else:
            i -= 1
        steps += 1
    return cost[-1, -1] / (steps + (j if i == 0 else 0) + (i if j == 0 else 0))


def test_dtw_of_pairs_of_many_lengths_equals_one_pair_at_a_time():
    """Pairs of every length from 1 to 13 frames, computed together by length (and one
    pair at a time, budget=1), equal zerospeech-libriabx's DTW written out pair by pair."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 14, 60)
    data = rng.standard_normal((int(lengths.sum()), 5)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    rows, cols = rng.integers(0, 60, 300), rng.integers(0, 60, 300)
    expected = [_one_dtw(data[start[r]:start[r] + lengths[r]].astype(np.float64),
                         data[start[c]:start[c] + lengths[c]].astype(np.float64)) for r, c in zip(rows, cols)]
    # float32 arccos near 1 (a token against itself): a dot product one ulp below 1 is
    # sqrt(2 * 2**-24) / pi = 1.1e-4 from 0, so that much absolute slack per frame
    for budget in (1 << 27, 1):
        np.testing.assert_allclose(dtw_distances(data, start, lengths, rows, cols, budget=budget), expected,
                                   rtol=1e-5, atol=2e-4)
