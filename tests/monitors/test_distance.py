"""The monitors' distance helpers agree with the plain definition (all pairwise distances, then the smallest)."""

from __future__ import annotations

import torch

from bastion.monitors._distance import nearest, nearest_distance, pairwise


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    b = torch.randn(300, 16, generator=g)
    a = torch.cat([torch.randn(5, 16, generator=g), b[[7, 42]] + 1e-4])  # two rows are exact repeats of b's
    return a, b, (b * b).sum(1)


def test_nearest_distance_is_the_smallest_pairwise_distance() -> None:
    a, b, b_sq = _data()
    want = pairwise(a, b).min(1).values
    assert torch.allclose(nearest_distance(a, b, b_sq), want, atol=1e-4)
    assert torch.allclose(nearest_distance(a[:1], b, b_sq), want[:1], atol=1e-4)


def test_nearest_skips_exact_repeats_and_says_which_rows_had_one() -> None:
    a, b, b_sq = _data()
    d = pairwise(a, b)
    dist, idx, repeated = nearest(a, b, b_sq, 3)
    assert torch.allclose(dist, d.topk(3, dim=1, largest=False).values, atol=1e-4)
    assert not bool(repeated.any())  # no threshold: nothing is a repeat
    dist, idx, repeated = nearest(a, b, b_sq, 3, ignore_below=0.01)
    assert repeated.tolist() == [False] * 5 + [True, True]
    masked = d.masked_fill(d < 0.01, float("inf"))
    want, want_idx = masked.topk(3, dim=1, largest=False)
    assert torch.allclose(dist, want, atol=1e-4) and torch.equal(idx, want_idx)
    assert 7 not in idx[5].tolist() and 42 not in idx[6].tolist()
