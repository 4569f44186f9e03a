"""The disentangling variant: gradient reversal, the heads' losses, pitch cropped in step
with the audio, and λ = 0 being plain HuBERT exactly."""

import dataclasses

import numpy as np
import pytest
import torch
from test_trainer import follows_eager, log_records, overrides, weights

from hubertkit.config import preset
from hubertkit.config.train import HubertCriterionConfig as CriterionConfig
from hubertkit.data.dataset import HubertDataset, load_label_sets
from hubertkit.errors import HubertkitError
from hubertkit.model.disentangle import DisentangledHubert, build_hubert, grl_scale, reverse_gradient
from hubertkit.model.hubert import HubertModel
from hubertkit.train.tasks.pretraining import hubert_loss
from hubertkit.train.trainer import train


def test_gradient_reversal_flips_and_scales_the_gradient():
    x = torch.randn(3, 4, requires_grad=True)
    y = reverse_gradient(x, 0.5)
    assert torch.equal(y, x)
    (y * torch.arange(4.0)).sum().backward()
    assert torch.equal(x.grad, -0.5 * torch.arange(4.0).expand(3, 4))


def test_grl_warmup_ramps_linearly():
    assert [grl_scale(u, 2.0, 100) for u in (0, 50, 100, 500)] == [0.0, 1.0, 2.0, 2.0]
    assert grl_scale(0, 2.0, 0) == 2.0


def test_heads_do_not_change_the_hubert_weights_or_rng():
    torch.manual_seed(0)
    plain = HubertModel(preset("tiny"))
    after_plain = torch.rand(1)
    torch.manual_seed(0)
    both = build_hubert(preset("tiny", speaker_layer=2, pitch_layer=1, num_speakers=5))
    after_both = torch.rand(1)
    assert isinstance(both, DisentangledHubert) and type(build_hubert(preset("tiny"))) is HubertModel
    assert torch.equal(after_plain, after_both)
    heads = {k for k in both.state_dict() if k.startswith(("speaker_adversary.", "pitch_head."))}
    assert heads and set(both.state_dict()) - heads == set(plain.state_dict())
    assert all(torch.equal(v, both.state_dict()[k]) for k, v in plain.state_dict().items())


def test_plain_hubert_refuses_a_head_config_and_the_heads_their_inputs():
    with pytest.raises(HubertkitError, match="build_hubert"):
        HubertModel(preset("tiny", pitch_layer=1))
    with pytest.raises(HubertkitError, match="at least 2 speakers"):
        DisentangledHubert(preset("tiny", speaker_layer=1, num_speakers=1))


def test_a_disentangled_checkpoint_loads_with_its_heads(tmp_path):
    from hubertkit.model.io import load_model, save_model

    model = DisentangledHubert(preset("tiny", speaker_layer=2, pitch_layer=1, num_speakers=3)).eval()
    save_model(model, tmp_path / "m.pt")
    back = load_model(tmp_path / "m.pt")
    assert isinstance(back, DisentangledHubert)
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in model.state_dict().items())


def _speaker_grads(model, wav, speaker, grl):
    model.cfg = dataclasses.replace(model.cfg, grl_scale=grl)
    model.zero_grad()
    out = model(wav, [torch.randint(4, 24, (2, 49))], generator=torch.Generator().manual_seed(0))
    torch.nn.functional.cross_entropy(out["speaker_logits"], speaker).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_speaker_loss_reaches_the_encoder_reversed():
    torch.manual_seed(0)
    model = DisentangledHubert(preset("tiny", label_rate=50, speaker_layer=2, num_speakers=3, num_classes=[24])).eval()
    wav, speaker = torch.randn(2, 16000), torch.tensor([0, 2])
    reversed_, plain = _speaker_grads(model, wav, speaker, 1.0), _speaker_grads(model, wav, speaker, -1.0)
    assert not any(n.startswith("encoder.layers.2.") for n in reversed_)  # above the adversary's layer
    for name, g in reversed_.items():
        expected = plain[name] if name.startswith("speaker_adversary.") else -plain[name]
        assert torch.allclose(g, expected, atol=1e-7), name
    assert reversed_["encoder.layers.1.fc1.weight"].abs().sum() > 0


def test_head_losses_are_added_with_their_weights():
    torch.manual_seed(0)
    model = DisentangledHubert(preset("tiny", label_rate=50, speaker_layer=2, pitch_layer=2, num_speakers=3, num_classes=[24]))
    out = model(torch.randn(2, 16000), [torch.randint(4, 24, (2, 49))], generator=torch.Generator().manual_seed(0))
    assert out["speaker_logits"].shape == (2, 3) and out["pitch_pred"].shape == (2, 49, 2)
    speaker = torch.tensor([0, -100])  # the second speaker is unknown to the classifier
    pitch = torch.stack([torch.full((2, 49), 120.0), torch.ones(2, 49)], -1)
    pitch[1, 30:] = torch.tensor([0.0, -1.0])  # padding
    pitch[0, :10] = 0.0  # unvoiced
    base, n, log = hubert_loss(out, CriterionConfig(), speaker=speaker, pitch=pitch)
    assert log["acc_speaker"].count == 1 and log["mean_f0"].count == 39 + 30 and log["acc_voicing"].count == 49 + 30
    ce = torch.nn.functional.cross_entropy(out["speaker_logits"][:1], speaker[:1])
    with_spk, _, _ = hubert_loss(out, CriterionConfig(speaker_loss_weight=0.5), speaker=speaker, pitch=pitch)
    assert torch.allclose(with_spk - base, 0.5 * n * ce)
    voiced = pitch[..., 1] > 0
    l1 = (out["pitch_pred"][..., 0][voiced] - pitch[..., 0][voiced].log()).abs().mean()
    valid = pitch[..., 1] >= 0
    bce = torch.nn.functional.binary_cross_entropy_with_logits(out["pitch_pred"][..., 1][valid], pitch[..., 1][valid])
    with_f0, _, _ = hubert_loss(out, CriterionConfig(pitch_loss_weight=2.0), speaker=speaker, pitch=pitch)
    assert torch.allclose(with_f0 - base, 2.0 * n * (l1 + bce), rtol=1e-5)


def test_pitch_and_speaker_are_cropped_in_step(pitched):
    sets = load_label_sets(pitched / "labels", ["km"], 100.0)
    ds = HubertDataset(pitched / "tsv" / "train.tsv", pitched / "labels", "train", sets, max_sample_size=16000,
                       feat_dir=pitched / "pitch", pitch_rate=50.0)
    items = [ds[i] for i in range(4)]
    batch = ds.collate(items, np.random.default_rng(3))
    assert batch["pitch"].shape[:2] == (4, 50) and batch["speaker"].tolist() == [it["speaker"] for it in items]
    for j, it in enumerate(items):
        crop, src = batch["source"][j], it["source"]
        offset = next(o for o in range(len(src) - len(crop) + 1) if torch.equal(src[o : o + len(crop)], crop))
        start = round(offset * 50 / 16000)  # the audio offset in pitch frames
        assert torch.equal(batch["pitch"][j], it["pitch"][start : start + 50])
        assert torch.equal(batch["target_list"][0][j], it["label_list"][0][round(offset / 160) :][:100])


def test_pitch_dump_at_the_wrong_rate_is_refused(pitched, tmp_path):
    from hubertkit.data.speakers import write_speakers
    from hubertkit.features.pitch import dump_pitch

    dump_pitch(pitched / "tsv", "train", 1, 0, tmp_path, rate=100, progress=False)
    write_speakers(pitched / "tsv", ["train"], tmp_path)
    sets = load_label_sets(pitched / "labels", ["km"], 100.0)
    with pytest.raises(HubertkitError, match="dump the pitch with --rate 50"):
        HubertDataset(pitched / "tsv" / "train.tsv", pitched / "labels", "train", sets, feat_dir=tmp_path, pitch_rate=50.0)


def _disentangle(**weights_):
    return {"task.feat_dir": None, "model.speaker_layer": 2, "model.pitch_layer": 1,
            "criterion.speaker_loss_weight": weights_.get("spk", 0.0), "criterion.pitch_loss_weight": weights_.get("f0", 0.0)}


def test_zero_weights_train_exactly_plain_hubert(pitched, tmp_path):
    train("demo", overrides(pitched, tmp_path / "plain", **{"optimization.max_update": 4}), progress=False)
    extra = {**_disentangle(), "task.feat_dir": pitched / "pitch", "optimization.max_update": 4}
    train("demo", overrides(pitched, tmp_path / "heads", **extra), progress=False)
    plain, heads = weights(tmp_path / "plain"), weights(tmp_path / "heads")
    assert any(k.startswith("speaker_adversary.") for k in heads)
    for k, v in plain.items():
        assert torch.equal(v, heads[k]), k
    assert [r["loss"] for r in log_records(tmp_path / "plain")] == [r["loss"] for r in log_records(tmp_path / "heads")]


def test_a_compiled_disentangled_run_follows_the_eager_one(pitched, tmp_path):
    """common.compile with both heads weighted: the encoder compiled, the heads eager."""
    extra = {**_disentangle(spk=1.0, f0=1.0), "task.feat_dir": pitched / "pitch", "optimization.max_update": 4}
    train("demo", overrides(pitched, tmp_path / "c", **extra, **{"common.compile": "aot_eager"}), progress=False)
    train("demo", overrides(pitched, tmp_path / "e", **extra), progress=False)
    follows_eager(tmp_path / "c", tmp_path / "e")


def test_weighted_heads_train_and_log(pitched, tmp_path):
    extra = {**_disentangle(spk=1.0, f0=1.0), "task.feat_dir": pitched / "pitch", "model.grl_warmup_updates": 2}
    train("demo", overrides(pitched, tmp_path / "ck", **extra), progress=False)
    rec = log_records(tmp_path / "ck")
    assert {"acc_speaker", "mean_speaker", "mean_f0", "acc_voicing"} <= set(rec[-1])
    assert rec[-1]["mean_f0"] < rec[0]["mean_f0"]  # the pitch head learns log-F0


def test_heads_without_feat_dir_are_refused(labelled, tmp_path):
    with pytest.raises(HubertkitError, match="task.feat_dir"):
        train("demo", overrides(labelled, tmp_path / "ck", **{"model.speaker_layer": 1}), progress=False)


@pytest.mark.parametrize("fmt", ["hf", "fairseq"])
def test_export_keeps_hubert_and_drops_the_heads(tmp_path, fmt):
    from hubertkit.model.io import export, load_model, save_model

    model = DisentangledHubert(preset("tiny", speaker_layer=2, pitch_layer=3, num_speakers=4)).eval()
    save_model(model, tmp_path / "m.pt")
    target = tmp_path / ("hf" if fmt == "hf" else "fs.pt")
    export(tmp_path / "m.pt", target, fmt)
    back = load_model(target)
    assert type(back) is HubertModel
    wav = torch.randn(1, 8000)
    for a, b in zip(model.hidden_states(wav), back.hidden_states(wav)):
        assert torch.allclose(a, b, atol=1e-5)
