"""hubertkit's HuBERT against running reference code: s3prl's copy of fairseq's
``HubertModel`` (``s3prl.upstream.hubert.hubert_model``, the model fairseq's
``hubert.py`` defines, with its masking, NCE logits and feature penalty). The Makefile
installs it without its dependencies (it pins torchaudio, which this module does not
use); elsewhere these tests skip and say so.

Both directions: weights made by the reference load into hubertkit, and hubertkit's
fairseq export loads into the reference, strictly. Tolerances are float32 round-off
through a few layers of different but equivalent operation orders (fused attention,
cosine similarity computed apart).
"""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hubertkit.config import preset
from hubertkit.config.train import HubertCriterionConfig
from hubertkit.model.convert import from_fairseq, to_fairseq
from hubertkit.model.hubert import HubertModel
from hubertkit.model.masking import frame_padding
from hubertkit.train.tasks.pretraining import hubert_loss

ref = pytest.importorskip("s3prl.upstream.hubert.hubert_model",
                          reason="the reference (s3prl) is not installed: pip install --no-deps espnet-s3prl (make test does)")

ATOL = 2e-5  # float32, features of unit scale through 2-4 layers
NUM_CLASSES = [20, 12]


def reference_model(cfg_dict: dict, task: dict, num_classes: list[int]):
    fields = {f.name for f in dataclasses.fields(ref.HubertConfig)}
    cfg = ref.HubertConfig(**{k: v for k, v in cfg_dict.items() if k in fields})
    task_cfg = ref.HubertPretrainingConfig(label_rate=task["label_rate"], sample_rate=task["sample_rate"])
    return ref.HubertModel(cfg, task_cfg, [list(range(n)) for n in num_classes])


def ours_exported(**kw):
    """hubertkit's model (random weights), and the reference loaded from its fairseq export."""
    torch.manual_seed(0)
    ours = HubertModel(preset("tiny", label_rate=50, num_classes=NUM_CLASSES, untie_final_proj=True, **kw)).eval()
    exported = to_fairseq(ours)
    theirs = reference_model(exported["cfg"]["model"], exported["cfg"]["task"], NUM_CLASSES)
    theirs.load_state_dict(exported["model"], strict=True)
    return ours, theirs.eval()


def batch():
    g = torch.Generator().manual_seed(1)
    wav = torch.randn(2, 16000, generator=g)
    pad = torch.zeros(2, 16000, dtype=torch.bool)
    pad[1, 11000:] = True  # frames whose samples are all padding are padding frames
    wav[1, 11000:] = 0
    targets = [torch.randint(0, n, (2, 50), generator=g) for n in NUM_CLASSES]
    return wav, pad, targets


@pytest.mark.parametrize("layer_norm_first", [False, True])
def test_every_layer_matches_the_reference_both_ways(layer_norm_first):
    ours, theirs = ours_exported(layer_norm_first=layer_norm_first)
    wav, pad, _ = batch()
    for layer in range(1, ours.cfg.encoder_layers + 1):
        a, a_pad = ours.extract_features(wav, pad, layer=layer)
        with torch.no_grad():
            b, b_pad = theirs.extract_features(wav, pad, output_layer=layer)
        assert torch.equal(a_pad, b_pad)
        keep = ~a_pad
        assert torch.allclose(a[keep], b[keep], atol=ATOL), (layer, (a[keep] - b[keep]).abs().max())
    # the reference's own random weights, read by hubertkit's fairseq loader
    torch.manual_seed(3)
    exported = to_fairseq(ours)
    made = reference_model(exported["cfg"]["model"], exported["cfg"]["task"], NUM_CLASSES).eval()
    loaded = from_fairseq({"cfg": exported["cfg"], "model": made.state_dict(), "hubertkit": {"num_classes": NUM_CLASSES}}).eval()
    with torch.no_grad():
        b, _ = made.extract_features(wav, pad)
    a, _ = loaded.extract_features(wav, pad)
    assert torch.allclose(a[~a_pad], b[~a_pad], atol=ATOL)


def test_the_pretraining_loss_matches_the_reference(monkeypatch):
    """One mask for both (the reference draws its own with numpy): the masked and unmasked
    cross-entropies of every label set, the feature penalty, and the criterion's total
    (fairseq's ``hubert_criterion``: masked CE + 10 · penalty · sample size)."""
    ours, theirs = ours_exported()
    wav, pad, targets = batch()
    mask = torch.zeros(2, 49, dtype=torch.bool)
    mask[0, 3:13], mask[0, 30:40], mask[1, 5:15] = True, True, True
    monkeypatch.setattr(ref, "compute_mask_indices", lambda *a, **k: mask.numpy().copy())
    with torch.no_grad():
        out = ours(wav, targets, padding_mask=pad, masks=(mask, None))
        expected = theirs(wav, targets, padding_mask=pad.clone())
    assert torch.allclose(out["features_pen"], expected["features_pen"], rtol=1e-5)
    for kind in ("m", "u"):
        for i, (logits, target) in enumerate(zip(out[f"logit_{kind}_list"], out[f"target_{kind}_list"])):
            reference = expected[f"logit_{kind}_list"][i].float()  # column 0: the target
            assert reference.shape[0] == logits.shape[0] > 0
            ce = F.cross_entropy(logits, target.long(), reduction="sum")
            ce_ref = F.cross_entropy(reference, torch.zeros(len(reference), dtype=torch.long), reduction="sum")
            assert torch.allclose(ce, ce_ref, rtol=1e-5), (kind, i)
    cfg = HubertCriterionConfig(pred_masked_weight=1.0, pred_nomask_weight=0.0, loss_weights=[10.0])
    loss, sample_size, _ = hubert_loss(out, cfg)
    masked = theirs.get_logits(expected, True)
    criterion = sum(F.cross_entropy(x, y, reduction="sum") for x, y in zip(masked, theirs.get_targets(expected, True)))
    n = masked[0].shape[0]
    criterion = criterion + 10.0 * theirs.get_extra_losses(expected)[0][0].float() * n
    assert sample_size == n == int((mask & ~frame_padding(pad, 49)).sum())
    assert torch.allclose(loss, criterion, rtol=1e-5)


def test_hubertkits_mask_draws_what_the_reference_draws():
    """fairseq's ``compute_mask_indices`` (numpy) and hubertkit's (torch) use other random
    streams, so compare what they draw: every row of a padded batch masks the same number
    of frames, none of them padding, and the masked count's mean over 300 draws agrees
    within 4 standard errors of the difference."""
    from hubertkit.model.masking import compute_mask

    pad = torch.zeros(4, 200, dtype=torch.bool)
    pad[1, 150:], pad[3, 90:] = True, True
    counts = {"ours": [], "theirs": []}
    np.random.seed(0)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        for name, mask in (("theirs", torch.from_numpy(ref.compute_mask_indices((4, 200), pad, 0.65, 10, min_masks=2))),
                           ("ours", compute_mask((4, 200), pad, 0.65, 10, min_masks=2, generator=g))):
            per_row = mask.sum(1)
            assert not (mask & pad).any() and (per_row == per_row[0]).all(), name
            counts[name].append(float(per_row[0]))
    a, b = np.array(counts["ours"]), np.array(counts["theirs"])
    stderr = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    assert abs(a.mean() - b.mean()) < 4 * stderr, (a.mean(), b.mean(), stderr)
