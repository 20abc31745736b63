"""Carlini-Wagner L2: minimal perturbations, binary search, the eps cap and targeted runs."""

from __future__ import annotations

import pytest
import torch

from bastion import PGD, ConfigError, Norm, ThreatModel
from bastion.attacks import CarliniWagnerL2
from bastion.data import Dataset
from bastion.models.zoo import TrainedModel


def test_cw_finds_smaller_perturbations_than_pgd_needs(digits_model: TrainedModel, digits: Dataset) -> None:
    x, y = digits.x_test[:120], digits.y_test[:120]
    r = CarliniWagnerL2(ThreatModel(Norm.L2, 10.0), steps=100, binary_search_steps=5).run(digits_model.classifier, x, y)
    assert r.success_rate > 0.8
    median = float(r.norms[r.success].median())
    # PGD-L2 at C&W's median norm breaks clearly fewer inputs than C&W does with its per-input minimal norms
    pgd = PGD(ThreatModel(Norm.L2, median), steps=50).run(
        digits_model.classifier, x, y, generator=torch.Generator().manual_seed(0)
    )
    assert pgd.success_rate < r.success_rate
    assert bool((r.adv_labels[r.success] != y[r.success]).all())


def test_more_binary_search_never_hurts(digits_model: TrainedModel, digits: Dataset) -> None:
    x, y = digits.x_test[:80], digits.y_test[:80]
    short = CarliniWagnerL2(ThreatModel(Norm.L2, 10.0), steps=50, binary_search_steps=1).run(
        digits_model.classifier, x, y
    )
    long = CarliniWagnerL2(ThreatModel(Norm.L2, 10.0), steps=50, binary_search_steps=4).run(
        digits_model.classifier, x, y
    )
    assert long.success_rate >= short.success_rate
    assert short.success_rate < long.success_rate or float(long.norms[long.success].mean()) <= float(
        short.norms[short.success].mean()
    )


def test_eps_caps_the_kept_perturbations(digits_model: TrainedModel, digits: Dataset) -> None:
    x, y = digits.x_test[:80], digits.y_test[:80]
    r = CarliniWagnerL2(ThreatModel(Norm.L2, 0.4), steps=50, binary_search_steps=3).run(digits_model.classifier, x, y)
    assert float(r.norms.max()) <= 0.4 + 1e-5
    found = r.details["min_l2_found"]
    beyond = found > 0.4
    assert bool((~r.success[beyond]).all()) and bool(torch.equal(r.x_adv[beyond], x[beyond]))


def test_targeted_cw(digits_model: TrainedModel, digits: Dataset) -> None:
    x, y = digits.x_test[:60], digits.y_test[:60]
    target = (y + 1) % 10
    r = CarliniWagnerL2(ThreatModel(Norm.L2, 10.0, targeted=True), steps=100, binary_search_steps=4).run(
        digits_model.classifier, x, y, target=target
    )
    assert r.success_rate > 0.7 and torch.equal(r.adv_labels[r.success], target[r.success])


def test_cw_is_l2_only_and_validates_settings() -> None:
    with pytest.raises(ConfigError, match="does not support norm 'linf'"):
        CarliniWagnerL2(ThreatModel(Norm.LINF, 0.1))
    with pytest.raises(ConfigError, match="confidence"):
        CarliniWagnerL2(ThreatModel(Norm.L2, 1.0), confidence=-1.0)
