"""Drift tests: KS per feature with false-discovery control and the MMD permutation test."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp

from bastion.data import Dataset
from bastion.detectors.drift import DriftReference, SlidingWindow, benjamini_hochberg, ks_test, mmd_test
from bastion.errors import InputValidationError


def test_ks_statistics_and_p_values_match_scipy_feature_by_feature() -> None:
    g = torch.Generator().manual_seed(0)
    ref, cur = torch.randn(300, 6, generator=g), torch.randn(200, 6, generator=g) + torch.linspace(0, 0.6, 6)
    res = ks_test(ref, cur, fdr=0.05)
    for j in range(6):
        s = ks_2samp(ref[:, j].numpy(), cur[:, j].numpy(), method="asymp")
        assert float(res.statistic[j]) == pytest.approx(s.statistic, abs=1e-6)
        assert float(res.p_value[j]) == pytest.approx(s.pvalue, rel=1e-6, abs=1e-12)
    assert not bool(res.drifted[0]) and bool(res.drifted[-1])  # no shift in feature 0, 0.6 sd in the last


def test_ties_count_together_as_in_scipy() -> None:
    g = torch.Generator().manual_seed(1)
    ref = torch.randint(0, 4, (200, 3), generator=g).float()  # pixel-like data: few distinct values
    cur = torch.randint(0, 5, (150, 3), generator=g).float()
    res = ks_test(ref, cur)
    for j in range(3):
        s = ks_2samp(ref[:, j].numpy(), cur[:, j].numpy(), method="asymp")
        assert float(res.statistic[j]) == pytest.approx(s.statistic, abs=1e-6)
        assert float(res.p_value[j]) == pytest.approx(s.pvalue, rel=1e-5, abs=1e-12)


def test_benjamini_hochberg_rejects_the_step_up_set() -> None:
    p = torch.tensor([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216], dtype=torch.float64)
    assert benjamini_hochberg(p, 0.05).tolist() == [True, True] + [False] * 8
    assert benjamini_hochberg(p, 0.2).nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 5, 6]


def test_same_distribution_is_not_drift_and_a_contrast_change_is(digits: Dataset) -> None:
    ref, cur = digits.x_train, digits.x_test
    assert not ks_test(ref, cur, fdr=0.01).drift
    assert mmd_test(ref, cur, permutations=200).p_value > 0.01
    faded = cur * 0.7 + 0.15  # lower contrast, as a new camera or scanner might give
    assert ks_test(ref, faded, fdr=0.01).drift
    assert mmd_test(ref, faded, permutations=200).p_value <= 0.01


def test_mmd_p_values_are_calibrated_under_the_null(digits: Dataset) -> None:
    x = digits.x_train.flatten(1)
    ps = []
    for seed in range(20):
        perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
        ps.append(
            mmd_test(
                x[perm[:300]], x[perm[300:500]], permutations=100, generator=torch.Generator().manual_seed(seed)
            ).p_value
        )
    assert np.mean(np.array(ps) <= 0.1) <= 0.3  # about 10% expected; a broken test rejects far more
    assert min(ps) >= 1 / 101


def test_bad_input_is_refused_with_the_reason() -> None:
    with pytest.raises(InputValidationError, match="features"):
        ks_test(torch.rand(10, 4), torch.rand(10, 5))
    with pytest.raises(InputValidationError, match="at least 2"):
        mmd_test(torch.rand(10, 4), torch.rand(1, 4))
    with pytest.raises(InputValidationError, match="permutations"):
        mmd_test(torch.rand(10, 4), torch.rand(10, 4), permutations=0)
    with pytest.raises(InputValidationError, match="fdr"):
        ks_test(torch.rand(10, 4), torch.rand(10, 4), fdr=1.5)


def test_sliding_window_hands_out_non_overlapping_windows() -> None:
    w = SlidingWindow(torch.rand(50, 3), size=20)
    got = [w.add(torch.full((7, 3), float(i))) for i in range(6)]  # 42 inputs: windows after 21 and 42
    full = [g for g in got if g is not None]
    assert len(full) == 2 and all(f.shape == (20, 3) for f in full)


def test_a_prepared_reference_gives_the_one_shot_results_window_after_window(digits: Dataset) -> None:
    """DriftReference computes the reference's kernel once; every later test equals a fresh mmd_test/ks_test."""
    ref = DriftReference(digits.x_train, max_inputs=1000)
    for i, cur in enumerate((digits.x_test[:150], digits.x_test[150:300] * 0.7 + 0.15)):
        g = torch.Generator().manual_seed(i)
        mmd = ref.mmd(cur, permutations=99, generator=g)
        once = mmd_test(
            digits.x_train, cur, permutations=99, generator=torch.Generator().manual_seed(i), max_inputs=1000
        )
        assert mmd.mmd2 == pytest.approx(once.mmd2, rel=1e-4) and mmd.p_value == once.p_value
        assert mmd.bandwidth == once.bandwidth
        assert torch.equal(ref.ks(cur, fdr=0.01).statistic, ks_test(digits.x_train, cur, fdr=0.01).statistic)
    with pytest.raises(InputValidationError, match="features"):
        ref.mmd(torch.rand(10, 3))


def test_the_window_is_the_last_inputs_of_the_stream() -> None:
    w = SlidingWindow(torch.rand(50, 3), size=20)
    rows = torch.arange(75.0).reshape(25, 3)
    assert w.add(rows[:15]) is None
    full = w.add(rows[15:])  # 25 arrived: the last 20 make the window
    assert full is not None and torch.equal(full, rows[5:])
    with pytest.raises(InputValidationError, match="3 features"):
        w.add(torch.rand(2, 4))


@pytest.mark.parametrize("sizes", [(40, 12), (300, 200), (1000, 500)])
def test_exact_tail_only_where_it_decides_gives_the_all_exact_decisions(sizes: tuple[int, int]) -> None:
    """The exact Kolmogorov tail is evaluated for the reported features and down the statistics until it passes
    fdr; every decision, and every p-value it did evaluate, equals scipy's exact tail applied to all features."""
    from scipy.stats import kstwo

    n, m = sizes
    g = torch.Generator().manual_seed(n)
    ref = torch.randn(n, 300, generator=g)
    cur = torch.randn(m, 300, generator=g) + torch.cat([torch.zeros(270), torch.linspace(0.1, 0.8, 30)])
    ref_d = DriftReference(ref)
    for fdr in (0.01, 0.1):
        res = ref_d.ks(cur, fdr=fdr, exact_top=0)
        en = max(1, round(n * m / (n + m)))
        exact = torch.from_numpy(kstwo.sf(res.statistic.double().numpy(), en)).clamp(0, 1)
        assert torch.equal(res.drifted, benjamini_hochberg(exact, fdr))
        assert bool((res.p_value >= exact * (1 - 1e-5)).all())  # the limit tail stands in only from above
        # (the statistic is float32 here, float64 inside: hence the relative tolerances)
        top = res.statistic.argsort(descending=True)[:5]
        reported = ref_d.ks(cur, fdr=fdr, exact_top=5).p_value[top]
        assert torch.allclose(reported, exact[top], rtol=1e-5, atol=1e-15)
    assert 0 < int(res.drifted.sum()) < 300
    with pytest.raises(InputValidationError, match="exact_top"):
        ref_d.ks(cur, exact_top=-1)
