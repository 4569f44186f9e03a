import pytest
import torch

from hubertkit.model.masking import compute_mask


def test_rows_get_equal_counts_and_respect_padding():
    g = torch.Generator().manual_seed(0)
    padding = torch.zeros(4, 200, dtype=torch.bool)
    padding[1, 150:] = True
    padding[3, 80:] = True
    mask = compute_mask((4, 200), padding, 0.8, 10, min_masks=2, generator=g)
    counts = mask.sum(1)
    assert (counts == counts[0]).all() and counts[0] > 0
    assert not (mask & padding).any()


def test_mask_is_made_of_spans_with_expected_coverage():
    g = torch.Generator().manual_seed(1)
    total, span, prob = 1000, 10, 0.5
    mask = compute_mask((1, total), None, prob, span, generator=g)[0]
    # number of span starts is int(prob * total / span + u): 50; overlaps make coverage < 50%
    assert 0.25 < mask.float().mean() <= 0.5 + 1e-9
    runs = torch.diff(torch.cat([torch.tensor([0]), mask.int(), torch.tensor([0])])).nonzero().flatten()
    lengths = (runs[1::2] - runs[::2]).tolist()
    assert min(lengths) >= span  # spans never shorter than mask_length (they may merge)


@pytest.mark.parametrize("seed", range(40))
def test_min_masks_on_short_rows(seed):
    """12 frames, spans of 10, at least 2 spans: as fairseq, the starts may then reach
    12 - 2 - 1 = 9 frames before the end, so the two distinct starts (of 0..2) cover 11 or
    12 frames, never fewer; every row is cut to the same count."""
    mask = compute_mask((3, 12), None, 0.01, 10, min_masks=2, generator=torch.Generator().manual_seed(seed))
    counts = mask.sum(1)
    assert (counts == counts[0]).all() and 11 <= counts[0] <= 12


@pytest.mark.parametrize("seed", range(3))
def test_seeded_generator_is_reproducible(seed):
    a = compute_mask((2, 300), None, 0.65, 10, generator=torch.Generator().manual_seed(seed))
    b = compute_mask((2, 300), None, 0.65, 10, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(a, b)
