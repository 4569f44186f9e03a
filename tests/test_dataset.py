import shutil

import numpy as np
import pytest
import torch

from hubertkit.data.batching import batches_by_size
from hubertkit.data.dataset import HubertDataset, check_same_kmeans, load_label_sets
from hubertkit.data.labels import read_labels, write_sidecar
from hubertkit.errors import HubertkitError


def dataset(root, label_dir=None, rate=100.0, **kw):
    label_dir = label_dir or root / "labels"
    return HubertDataset(root / "tsv" / "train.tsv", label_dir, "train", load_label_sets(label_dir, ["km"], rate), **kw)


def copy_labels(labelled, tmp_path):
    shutil.copytree(labelled / "labels", tmp_path / "labels")
    return tmp_path / "labels"


def test_labels_become_dictionary_indices(labelled):
    ds = dataset(labelled)
    raw = read_labels(labelled / "labels" / "train.km")
    assert ds.label_sets[0].num_classes == 24  # 20 clusters + fairseq's 4 specials
    assert torch.equal(ds[0]["label_list"][0], torch.tensor(raw[ds.index[0]]) + 4)


def test_collate_crops_labels_in_step(labelled):
    ds = dataset(labelled, max_sample_size=16000)
    items = [ds[i] for i in range(4)]
    batch = ds.collate(items, np.random.default_rng(0))
    assert batch["source"].shape == (4, 16000) and batch["padding_mask"] is None
    assert batch["target_list"][0].shape == (4, 100)
    for j, it in enumerate(items):
        wav = it["source"]
        start = next(s for s in range(len(wav) - 16000 + 1) if torch.equal(wav[s : s + 16000], batch["source"][j]))
        f = int(round(start * 100 / 16000))
        assert torch.equal(batch["target_list"][0][j], it["label_list"][0][f : f + 100])


def test_pad_audio_pads_to_longest(labelled):
    ds = dataset(labelled, pad_audio=True)
    items = [ds[i] for i in range(3)]
    batch = ds.collate(items)
    longest = max(len(it["source"]) for it in items)
    assert batch["source"].shape[1] == longest
    assert batch["padding_mask"].sum(1).tolist() == [longest - len(it["source"]) for it in items]


def test_wrong_label_rate_says_which_to_set(labelled):
    with pytest.raises(HubertkitError, match="set model.label_rate=100"):
        dataset(labelled, rate=50.0)


def test_misaligned_utterances_are_named_or_skipped(labelled, tmp_path):
    lab = copy_labels(labelled, tmp_path)
    lines = (lab / "train.km").read_text().splitlines()
    lines[2] = " ".join(lines[2].split()[:-30])  # 0.3 s of labels missing
    (lab / "train.km").write_text("\n".join(lines) + "\n")
    with pytest.raises(HubertkitError, match="1 utterance.*differing by more than 0.1 s.*flac"):
        dataset(labelled, lab)
    assert len(dataset(labelled, lab, skip_misaligned=True)) == len(lines) - 1


def test_label_count_and_dictionary_traps(labelled, tmp_path):
    lab = copy_labels(labelled, tmp_path)
    lines = (lab / "train.km").read_text().splitlines()
    (lab / "train.km").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(HubertkitError, match=f"has {len(lines) - 1} lines but .* lists {len(lines)}"):
        dataset(labelled, lab)
    (lab / "train.km").write_text("\n".join(lines) + "\n")
    (lab / "dict.km.txt").write_text("".join(f"{i} 1\n" for i in range(10)))  # partial dictionary
    with pytest.raises(HubertkitError, match="not in dict.km.txt"):
        dataset(labelled, lab)
    (lab / "dict.km.txt").write_text("")
    with pytest.raises(HubertkitError, match="empty"):
        dataset(labelled, lab)


def test_valid_labels_from_another_kmeans_are_refused(labelled, tmp_path):
    lab = copy_labels(labelled, tmp_path)
    info = {**__import__("json").loads((lab / "valid.km.json").read_text()), "kmeans": "0123456789abcdef"}
    write_sidecar(lab / "valid.km", info)
    with pytest.raises(HubertkitError, match="k-means fitted on train"):
        check_same_kmeans(lab, ["train", "valid"], ["km"])
    check_same_kmeans(labelled / "labels", ["train", "valid"], ["km"])


def greedy_batches(num_tokens, max_tokens, batch_size, seed, epoch):
    """The grouping restated item by item, as fairseq's batch_by_size fills batches: add
    an item while ``items · longest ≤ max_tokens`` and ``items ≤ batch_size``."""
    rng = np.random.default_rng([seed, epoch])
    order = np.lexsort((rng.permutation(len(num_tokens)), num_tokens))[::-1]
    batches, current, longest = [], [], 0
    for i in order.tolist():
        grown = max(longest, num_tokens[i]) * (len(current) + 1)
        if current and ((max_tokens and grown > max_tokens) or (batch_size and len(current) >= batch_size)):
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, num_tokens[i])
    batches.append(current)
    return [batches[i] for i in rng.permutation(len(batches))]


@pytest.mark.parametrize("max_tokens, batch_size", [(1_400_000, None), (1_400_000, 3), (None, 7), (250_000, 1)])
def test_batches_by_max_tokens(max_tokens, batch_size):
    sizes = np.random.default_rng(0).integers(32000, 250000, 500)
    sizes[:50] = 100_000  # ties, ordered at random
    batches = batches_by_size(sizes, max_tokens, batch_size, seed=1, epoch=3)
    assert batches.tolist() == greedy_batches(sizes, max_tokens, batch_size, seed=1, epoch=3)
    assert sorted(i for b in batches for i in b) == list(range(500))
    assert all(len(b) * sizes[b].max() <= (max_tokens or 10**9) and len(b) <= (batch_size or 500) for b in batches)
    assert batches.tolist() == batches_by_size(sizes, max_tokens, batch_size, seed=1, epoch=3).tolist()
    assert batches.tolist() != batches_by_size(sizes, max_tokens, batch_size, seed=1, epoch=4).tolist()
    assert [b.tolist() for b in batches[1::3]] == batches.tolist()[1::3]
    with pytest.raises(HubertkitError, match="max_tokens"):
        batches_by_size(sizes, 100_000)


def test_dictionary_order_and_huge_ids(labelled, tmp_path):
    """Classes follow the dictionary's line order, whatever its ids; an id of 10**12 costs
    no memory (no table as large as the largest id); a symbol listed twice is refused."""
    lab = copy_labels(labelled, tmp_path)
    symbols = (lab / "dict.km.txt").read_text().split()[::2]
    shuffled = symbols[::-1] + ["1000000000000"]
    (lab / "dict.km.txt").write_text("".join(f"{s} 1\n" for s in shuffled))
    ds = dataset(labelled, lab)
    raw = read_labels(lab / "train.km")[ds.index[0]]
    assert ds[0]["label_list"][0].tolist() == [shuffled.index(str(v)) + 4 for v in raw]
    (lab / "dict.km.txt").write_text("".join(f"{s} 1\n" for s in [*symbols, symbols[3]]))
    with pytest.raises(HubertkitError, match=f"symbol '{symbols[3]}' is listed twice"):
        dataset(labelled, lab)


def test_workers_receive_the_dataset_without_its_labels_or_manifest_text(labelled):
    """A DataLoader worker started by spawn or forkserver gets the dataset pickled: the
    label store and the manifest are mapped again there, not copied (what a worker holds
    is a few arrays of one number per utterance)."""
    import pickle

    ds = dataset(labelled)
    data = pickle.dumps(ds)
    assert len(data) < 2000 + 40 * len(ds)
    assert ds.labels[0].store.values.nbytes > len(data) / 2
    copy = pickle.loads(data)
    assert torch.equal(copy[3]["label_list"][0], ds[3]["label_list"][0])
    assert torch.equal(copy[3]["source"], ds[3]["source"])
