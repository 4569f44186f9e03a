import numpy as np
import pytest

from hubertkit.cluster.kmeans import KMeansModel, dump_labels, learn_kmeans
from hubertkit.data.labels import (
    make_dict,
    merge_labels,
    read_dict,
    read_labels,
    read_sidecar,
)
from hubertkit.data.shards import read_shard
from hubertkit.errors import HubertkitError


@pytest.fixture(scope="module")
def km(prepared, tmp_path_factory):
    path = tmp_path_factory.mktemp("km") / "km.pt"
    learn_kmeans(prepared / "feat", "train", 2, path, 30, progress=False)
    return path


def brute_force_labels(feats, centroids):
    return ((feats[:, None, :].astype(np.float64) - centroids[None]) ** 2).sum(-1).argmin(1)


def test_dump_labels_is_nearest_centroid(prepared, km, tmp_path):
    from hubertkit.cluster.kmeans import load_kmeans

    dump_labels(prepared / "feat", "train", km, 2, "all", tmp_path, progress=False)
    c = load_kmeans(km).centroids
    for rank in range(2):
        shard = read_shard(prepared / "feat", "train", rank, 2)
        lines = read_labels(tmp_path / f"train_{rank}_2.km")
        assert [len(l) for l in lines] == shard.lengths.tolist()
        ours = np.concatenate([np.array(l) for l in lines])
        ref = brute_force_labels(np.asarray(shard.feats), c)
        assert (ours == ref).mean() > 0.9999  # ties at float32 rounding may differ
        info = read_sidecar(tmp_path / f"train_{rank}_2.km")
        assert info["n_clusters"] == 30 and info["utterances"] == len(shard)


def test_merge_and_dict(prepared, km, tmp_path):
    for split, nshard in (("train", 2), ("valid", 1)):
        dump_labels(prepared / "feat", split, km, nshard, "all", tmp_path, progress=False)
        merge_labels(tmp_path, split, nshard)
    train = (tmp_path / "train.km").read_text()
    assert train == (tmp_path / "train_0_2.km").read_text() + (tmp_path / "train_1_2.km").read_text()
    assert read_sidecar(tmp_path / "train.km")["kmeans"] == read_sidecar(tmp_path / "train_0_2.km")["kmeans"]
    r = make_dict(tmp_path)
    symbols = read_dict(tmp_path / "dict.km.txt")
    assert symbols == [str(i) for i in range(30)] and r["n_clusters"] == 30
    counts = [int(l.split()[1]) for l in (tmp_path / "dict.km.txt").read_text().splitlines()]
    labels = [v for f in ("train.km", "valid.km") for line in read_labels(tmp_path / f) for v in line]
    assert counts == np.bincount(labels, minlength=30).tolist()


def test_merge_refuses_missing_shard(prepared, km, tmp_path):
    dump_labels(prepared / "feat", "train", km, 2, 0, tmp_path, progress=False)
    with pytest.raises(HubertkitError, match="train_1_2.km"):
        merge_labels(tmp_path, "train", 2)
    assert not (tmp_path / "train.km").exists()


def test_merge_refuses_shards_of_different_kmeans(prepared, km, tmp_path):
    other = tmp_path / "other.pt"
    KMeansModel(np.random.default_rng(0).standard_normal((30, 39)).astype(np.float32)).save(other)
    dump_labels(prepared / "feat", "train", km, 2, 0, tmp_path, progress=False)
    dump_labels(prepared / "feat", "train", other, 2, 1, tmp_path, progress=False)
    with pytest.raises(HubertkitError, match="different k-means"):
        merge_labels(tmp_path, "train", 2)


def test_dimension_mismatch(prepared, tmp_path):
    KMeansModel(np.zeros((4, 768), np.float32)).save(tmp_path / "km.pt")
    with pytest.raises(HubertkitError, match="768-dim"):
        dump_labels(prepared / "feat", "valid", tmp_path / "km.pt", 1, 0, tmp_path, progress=False)


def test_dict_errors(tmp_path):
    with pytest.raises(HubertkitError, match="no merged label files"):
        make_dict(tmp_path)
    (tmp_path / "dict.km.txt").write_text("")
    with pytest.raises(HubertkitError, match="empty"):
        read_dict(tmp_path / "dict.km.txt")
    (tmp_path / "train.km").write_text("0 1 2\n5 5\n")
    with pytest.raises(HubertkitError, match="outside 0..3"):
        make_dict(tmp_path, n_clusters=4)
    (tmp_path / "train.km").write_text("0 1 x\n")
    with pytest.raises(HubertkitError, match="train.km:1: labels must be non-negative integers"):
        make_dict(tmp_path)
    with pytest.raises(HubertkitError, match="train.km:1"):
        read_labels(tmp_path / "train.km")


def test_merge_refuses_a_shard_cut_at_a_line_boundary_and_drops_stale_sidecars(prepared, km, tmp_path):
    from hubertkit.data.labels import read_sidecar, sidecar_path

    dump_labels(prepared / "feat", "train", km, 2, "all", tmp_path, progress=False)
    merge_labels(tmp_path, "train", 2)
    assert read_sidecar(tmp_path / "train.km")
    lines = (tmp_path / "train_1_2.km").read_text().splitlines(keepends=True)
    (tmp_path / "train_1_2.km").write_text("".join(lines[:-1]))  # one whole line lost
    with pytest.raises(HubertkitError, match=f"train_1_2.km has {len(lines) - 1} lines but dump-labels wrote {len(lines)}"):
        merge_labels(tmp_path, "train", 2)
    (tmp_path / "train_1_2.km").write_text("".join(lines))
    sidecar_path(tmp_path / "train_1_2.km").unlink()  # shards from elsewhere, without sidecars
    merge_labels(tmp_path, "train", 2)
    assert read_sidecar(tmp_path / "train.km") is None  # the old merged sidecar does not vouch for them


def test_make_dict_refuses_ids_no_k_means_makes(tmp_path):
    """A line per id up to the largest: a stray label of 2**32, or a mistyped --n-clusters,
    exhausted memory."""
    (tmp_path / "train.km").write_text(f"0 1 {2**32}\n")
    with pytest.raises(HubertkitError, match="reach 4294967296: dict.km.txt lists every id"):
        make_dict(tmp_path)
    (tmp_path / "train.km").write_text("0 1 2\n")
    with pytest.raises(HubertkitError, match=r"--n-clusters must be in 1..1048576"):
        make_dict(tmp_path, n_clusters=10**9)
    assert not (tmp_path / "dict.km.txt").exists()
