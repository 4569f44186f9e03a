from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from hubertkit.data.manifest import read_manifest
from hubertkit.data.shards import read_shard
from hubertkit.errors import HubertkitError
from hubertkit.features.hubert import dump_hubert
from hubertkit.model import HubertModel, preset
from hubertkit.model.convert import export_hf
from hubertkit.model.io import save_model


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = HubertModel(preset("tiny", num_classes=[24], label_rate=100)).eval()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_model(model, path)
    return path, model


@pytest.mark.parametrize("normalize", [False, True])
def test_dump_hubert_equals_extract_features(prepared, tiny_ckpt, tmp_path, normalize):
    path, model = tiny_ckpt
    if normalize:  # fairseq's task.normalize travels with the checkpoint
        normalized = HubertModel(replace(model.cfg, normalize=True))
        normalized.load_state_dict(model.state_dict())
        save_model(normalized, tmp_path / "norm.pt")
        path = tmp_path / "norm.pt"
    summary = dump_hubert(prepared / "tsv", "valid", path, 2, 1, 0, tmp_path / "feat", progress=False)
    shard = read_shard(tmp_path / "feat", "valid", 0, 1)
    assert shard.dim == 96 and summary.utterances == len(shard)
    for i, utt in enumerate(read_manifest(prepared / "tsv" / "valid.tsv").utterances):
        wav = torch.from_numpy(sf.read(utt.path, dtype="float32")[0])
        if normalize:
            wav = F.layer_norm(wav, wav.shape)
        ref = model.extract_features(wav[None], layer=2)[0][0].numpy()
        np.testing.assert_allclose(shard.utterance(i), ref, atol=1e-5, rtol=1e-5)


def test_any_checkpoint_kind_and_chunks(prepared, tiny_ckpt, tmp_path):
    path, model = tiny_ckpt
    export_hf(model, tmp_path / "hf")
    dump_hubert(prepared / "tsv", "valid", path, 3, 1, 0, tmp_path / "a", progress=False)
    dump_hubert(prepared / "tsv", "valid", tmp_path / "hf", 3, 1, 0, tmp_path / "b", jobs=2, progress=False)
    a, b = read_shard(tmp_path / "a", "valid", 0, 1), read_shard(tmp_path / "b", "valid", 0, 1)
    np.testing.assert_allclose(np.asarray(a.feats), np.asarray(b.feats), atol=1e-5)
    dump_hubert(prepared / "tsv", "valid", path, 3, 1, 0, tmp_path / "c", max_chunk=16000, progress=False)
    c = read_shard(tmp_path / "c", "valid", 0, 1)
    np.testing.assert_array_equal(c.lengths, a.lengths)  # chunked, every frame still there (labels fit the audio)
    assert not np.allclose(np.asarray(c.feats), np.asarray(a.feats), atol=1e-3)  # but each chunk was encoded alone


def test_bad_layer(prepared, tiny_ckpt, tmp_path):
    with pytest.raises(HubertkitError, match="LAYER must be in 1..3"):
        dump_hubert(prepared / "tsv", "valid", tiny_ckpt[0], 7, 1, 0, tmp_path, progress=False)


@pytest.mark.parametrize("max_chunk", [-16000, 0, 399])
def test_a_chunk_shorter_than_the_receptive_field_is_refused(prepared, tiny_ckpt, tmp_path, max_chunk):
    """A negative chunk silently changed the features; one shorter than a frame's window has none."""
    with pytest.raises(HubertkitError, match="--max-chunk must be at least the model's receptive field, 400 samples"):
        dump_hubert(prepared / "tsv", "valid", tiny_ckpt[0], 1, 1, 0, tmp_path / "f", max_chunk=max_chunk, progress=False)
    assert not (tmp_path / "f").exists()


EXPERIMENT_CHECKPOINTS = Path(__file__).resolve().parents[1] / "experiments" / "checkpoints"


@pytest.mark.parametrize("name", sorted(p.name for p in EXPERIMENT_CHECKPOINTS.glob("*.pt")))
def test_the_real_speech_checkpoints_in_the_repository_load(demo_dir, name):
    """experiments/checkpoints/*.pt, every one: plain hubertkit checkpoints (versions 1
    and 2 of the format), under 10 MB, layer 1 extractable."""
    from hubertkit.features.hubert import HubertLayerFeatures

    path = EXPERIMENT_CHECKPOINTS / name
    assert path.stat().st_size < 10 * 2**20
    torch.load(path, weights_only=True)
    wav = sf.read(next(demo_dir.glob("*/*.flac")), dtype="float32")[0]
    feats = HubertLayerFeatures(path, 1)(wav)
    assert feats.shape == ((len(wav) - 400) // 320 + 1, 192) and np.isfinite(feats).all()
