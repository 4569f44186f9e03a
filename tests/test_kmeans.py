import joblib
import numpy as np
import pytest
import torch
from sklearn.cluster import MiniBatchKMeans

from hubertkit.cli import main
from hubertkit.cluster.kmeans import (
    KMeansModel,
    learn_kmeans,
    load_kmeans,
    sample_frames,
)
from hubertkit.errors import HubertkitError


def fairseq_minibatch(feats, k, max_iter=100, batch_size=10000, n_init=20):
    """fairseq learn_kmeans.py's model, settings as in DESIGN.md."""
    return MiniBatchKMeans(
        n_clusters=k, init="k-means++", max_iter=max_iter, batch_size=batch_size, tol=0.0, max_no_improvement=100,
        n_init=n_init, reassignment_ratio=0.0, compute_labels=False, init_size=None,
    )


def all_frames(prepared):
    return sample_frames(prepared / "feat", "train", 2, -1, np.random.RandomState(0)).load()


def mean_sq_dist(feats, centroids):
    d = ((feats[:, None, :] - centroids[None]) ** 2).sum(-1)
    return d.min(1).mean()


def test_lloyd_inertia_matches_or_beats_fairseq_minibatch(prepared, tmp_path):
    feats = all_frames(prepared)
    k = 50
    np.random.seed(0)
    ref = fairseq_minibatch(feats, k).fit(feats)
    ref_inertia = -ref.score(feats) / len(feats)
    summary = learn_kmeans(prepared / "feat", "train", 2, tmp_path / "km.pt", k, progress=False)
    ours = load_kmeans(tmp_path / "km.pt")
    assert ours.n_clusters == k and ours.dim == 39
    # the reported inertia is the mean squared distance of the saved centroids
    assert summary.inertia == pytest.approx(mean_sq_dist(feats, ours.centroids), rel=1e-4)
    assert summary.inertia <= 1.005 * ref_inertia, (summary.inertia, ref_inertia)


def test_minibatch_reproduces_fairseq_recipe(prepared, tmp_path):
    k, percent, seed = 20, 0.5, 3
    learn_kmeans(prepared / "feat", "train", 2, tmp_path / "km.pt", k, percent=percent, seed=seed, algo="minibatch")
    # fairseq: np.random.seed(seed), ceil(percent·n) utterances per shard, then fit
    np.random.seed(seed)
    parts = []
    for rank in range(2):
        lengths = np.loadtxt(prepared / "feat" / f"train_{rank}_2.len", dtype=int)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        idx = np.random.choice(len(lengths), int(np.ceil(len(lengths) * percent)), replace=False)
        feat = np.load(prepared / "feat" / f"train_{rank}_2.npy", mmap_mode="r")
        parts += [feat[offsets[i] : offsets[i] + lengths[i]] for i in idx]
    feats = np.concatenate(parts)
    ref = fairseq_minibatch(feats, k).fit(feats)
    np.testing.assert_allclose(load_kmeans(tmp_path / "km.pt").centroids, ref.cluster_centers_, rtol=1e-5, atol=1e-4)


def test_percent_samples_utterances(prepared):
    full = sample_frames(prepared / "feat", "train", 2, -1, np.random.RandomState(0))
    half = sample_frames(prepared / "feat", "train", 2, 0.5, np.random.RandomState(0))
    assert len(half.ranges) == sum(int(np.ceil(len(s) * 0.5)) for s in full.shards)
    assert 0 < half.num_frames < full.num_frames
    assert half.load().shape == (half.num_frames, 39)


def test_save_load_is_safe_and_exact(tmp_path):
    c = np.random.default_rng(0).standard_normal((7, 5)).astype(np.float32)
    KMeansModel(c, {"algo": "test"}).save(tmp_path / "km.pt")
    state = torch.load(tmp_path / "km.pt", weights_only=True)
    assert state["format"] == "hubertkit.kmeans"
    loaded = load_kmeans(tmp_path / "km.pt")
    assert np.array_equal(loaded.centroids, c) and loaded.meta["algo"] == "test"
    assert loaded.fingerprint == KMeansModel(c.copy()).fingerprint


def test_models_that_cannot_label_are_refused_on_load(tmp_path, prepared):
    """A NaN centroid would label every frame with one cluster (exit 0); an empty model
    has nothing to label with; both stop at load, in dump-labels and export-kmeans alike."""
    from hubertkit.cluster.kmeans import dump_labels, export_kmeans

    c = np.random.default_rng(0).standard_normal((4, 39)).astype(np.float32)
    c[3, 5] = np.nan
    KMeansModel(c).save(tmp_path / "nan.pt")
    KMeansModel(np.zeros((0, 39), np.float32)).save(tmp_path / "empty.pt")
    with pytest.raises(HubertkitError, match="1 centroid.*NaN or infinite.*cluster 3"):
        dump_labels(prepared / "feat", "valid", tmp_path / "nan.pt", 1, 0, tmp_path / "lab", progress=False)
    with pytest.raises(HubertkitError, match="no clusters"):
        export_kmeans(tmp_path / "empty.pt", tmp_path / "out.bin")
    torch.save({"format": "hubertkit.kmeans", "version": 1}, tmp_path / "nocenters.pt")
    with pytest.raises(HubertkitError, match="not a hubertkit k-means model"):
        load_kmeans(tmp_path / "nocenters.pt")
    assert not (tmp_path / "lab").exists() and not (tmp_path / "out.bin").exists()


def test_a_folder_an_empty_or_a_damaged_model_file_is_named_as_such(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "empty.pt").write_bytes(b"")
    KMeansModel(np.ones((3, 4), np.float32)).save(tmp_path / "km.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "km.pt").read_bytes()[:100])
    (tmp_path / "junk.bin").write_bytes(b"\x80\x04junk")
    for name, message in (("folder", "folder is a folder"), ("empty.pt", "empty.pt is empty"),
                          ("cut.pt", r"cut.pt \(truncated or damaged\?\): PytorchStreamReader"),
                          ("junk.bin", "junk.bin as a joblib pickle")):
        with pytest.raises(HubertkitError, match=message):
            load_kmeans(tmp_path / name, trust_pickle=True)


def test_fairseq_joblib_model_needs_trust(tmp_path):
    x = np.random.default_rng(0).standard_normal((500, 4)).astype(np.float32)
    km = MiniBatchKMeans(n_clusters=6, n_init=1, random_state=0).fit(x)
    joblib.dump(km, tmp_path / "km.bin")
    with pytest.raises(HubertkitError, match="--trust-pickle"):
        load_kmeans(tmp_path / "km.bin")
    model = load_kmeans(tmp_path / "km.bin", trust_pickle=True)
    assert np.array_equal(model.predict(x), km.predict(x))


def test_fewer_frames_than_clusters(prepared, tmp_path):
    with pytest.raises(HubertkitError, match="fewer than 100000 clusters"):
        learn_kmeans(prepared / "feat", "train", 2, tmp_path / "km.pt", 100000, progress=False)
    assert not (tmp_path / "km.pt").exists()


def test_fairseq_flags_reach_minibatch(prepared, tmp_path, capsys):
    """learn_kmeans.py's own command line (underscore flags) gives scikit-learn's model with those settings."""
    main(["learn-kmeans", str(prepared / "feat"), "train", "2", str(tmp_path / "km.pt"), "10", "--algo", "minibatch",
          "--max_iter", "20", "--batch_size", "700", "--n_init", "2", "--seed", "5", "-q"])
    np.random.seed(5)
    feats = all_frames(prepared)
    ref = fairseq_minibatch(feats, 10, max_iter=20, batch_size=700, n_init=2).fit(feats)
    np.testing.assert_allclose(load_kmeans(tmp_path / "km.pt").centroids, ref.cluster_centers_, rtol=1e-5, atol=1e-4)
    with pytest.raises(HubertkitError, match="--algo minibatch"):  # lloyd has no batches: refused, not ignored
        learn_kmeans(prepared / "feat", "train", 2, tmp_path / "km2.pt", 10, batch_size=700)


def test_export_kmeans_is_what_fairseqs_dump_km_label_reads(prepared, tmp_path):
    """fairseq's ApplyKmeans: joblib.load, then argmin of ‖x‖² − 2x·C + ‖C‖²; and sklearn's own predict."""
    learn_kmeans(prepared / "feat", "train", 2, tmp_path / "km.pt", 15, progress=False)
    main(["export-kmeans", str(tmp_path / "km.pt"), str(tmp_path / "km.bin")])
    km = joblib.load(tmp_path / "km.bin")
    assert isinstance(km, MiniBatchKMeans)
    C = km.cluster_centers_.transpose()
    Cnorm = (C**2).sum(0, keepdims=True)
    x = all_frames(prepared)
    fairseq_labels = np.argmin((x**2).sum(1, keepdims=True) - 2 * np.matmul(x, C) + Cnorm, axis=1)
    ours = load_kmeans(tmp_path / "km.pt").predict(x)
    np.testing.assert_array_equal(fairseq_labels, ours)
    np.testing.assert_array_equal(km.predict(x), ours)
    back = load_kmeans(tmp_path / "km.bin", trust_pickle=True)
    np.testing.assert_array_equal(back.centroids, load_kmeans(tmp_path / "km.pt").centroids)


@pytest.mark.parametrize("kw, message", [
    ({"percent": float("nan")}, "--percent must be in"), ({"percent": 0}, "--percent must be in"),
    ({"percent": 1.5}, "--percent must be in"), ({"seed": -1}, "--seed must be in"),
    ({"algo": "minibatch", "batch_size": 0}, "--batch_size must be an integer of at least 1"),
    ({"algo": "minibatch", "n_init": 0}, "--n_init must be an integer of at least 1"),
    ({"algo": "minibatch", "init": "bogus"}, "--init must be 'k-means\\+\\+' or 'random'"),
    ({"algo": "minibatch", "reassignment_ratio": -0.1}, "--reassignment_ratio must be a number of at least 0"),
    ({"algo": "minibatch", "tol": float("nan")}, "--tol must be a number of at least 0"),
])
def test_bad_options_are_refused_before_any_work(prepared, tmp_path, kw, message):
    with pytest.raises(HubertkitError, match=message):
        learn_kmeans(prepared / "feat", "train", 2, tmp_path / "km.pt", 4, progress=False, **kw)
    assert not (tmp_path / "km.pt").exists()


@pytest.mark.parametrize("error", [RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed "
                                                "writing file data/0: file write failed"),
                                   OSError(28, "No space left on device")])
def test_a_full_disk_when_saving_is_named_not_a_traceback(prepared, tmp_path, capsys, monkeypatch, error):
    def full_disk(*args, **kwargs):
        raise error

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(SystemExit) as e:
        main(["learn-kmeans", str(prepared / "feat"), "train", "2", str(tmp_path / "km.pt"), "5", "-q"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert "cannot write k-means model " + str(tmp_path / "km.pt") in err and "nothing was written" in err
    assert not list(tmp_path.iterdir())
