"""HopSkipJump: labels only, the query budget, the eps budget, early stopping."""

from __future__ import annotations

import pytest
import torch

from bastion import ConfigError, Norm, ThreatModel
from bastion.attacks import HopSkipJump
from bastion.data import Dataset
from bastion.models.base import ModelSpec
from bastion.models.zoo import TrainedModel


class LabelsOnly:
    """Wraps a classifier so that only its top-1 label leaks out (as one-hot scores)."""

    def __init__(self, inner: object, spec: ModelSpec) -> None:
        self.inner, self.spec, self.queries = inner, spec, 0

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        self.queries += x.shape[0]
        labels = self.inner.predict_logits(x).argmax(1)  # type: ignore[attr-defined]
        return torch.nn.functional.one_hot(labels, self.spec.num_classes).float()


def _seed() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize("norm, eps", [(Norm.L2, 1.0), (Norm.LINF, 0.15)])
def test_budget_and_threat_model_are_respected(
    norm: Norm, eps: float, digits_model: TrainedModel, digits: Dataset
) -> None:
    x, y = digits.x_test[:30], digits.y_test[:30]
    model = LabelsOnly(digits_model.classifier, digits.spec)
    r = HopSkipJump(ThreatModel(norm, eps), max_queries=500, init_evals=30, max_evals=100).run(
        model, x, y, generator=_seed()
    )
    assert bool((r.queries <= 501).all()) and model.queries == int(r.queries.sum())
    assert r.success_rate > 0.3 and float(r.norms.max()) <= eps + 1e-5
    assert bool((r.norms[~r.success] == 0).all())  # unbroken inputs come back unperturbed


def test_early_stop_saves_queries_without_losing_successes(digits_model: TrainedModel, digits: Dataset) -> None:
    x, y = digits.x_test[:20], digits.y_test[:20]
    kw = {"max_queries": 400, "init_evals": 20, "max_evals": 50}
    early = HopSkipJump(ThreatModel(Norm.L2, 1.5), **kw).run(digits_model.classifier, x, y, generator=_seed())
    full = HopSkipJump(ThreatModel(Norm.L2, 1.5), early_stop=False, **kw).run(
        digits_model.classifier, x, y, generator=_seed()
    )
    assert int(early.queries.sum()) < int(full.queries.sum())
    assert early.success_rate >= full.success_rate - 0.1


def test_targeted_hopskipjump(digits_model: TrainedModel, digits: Dataset) -> None:
    x, y = digits.x_test[:12], digits.y_test[:12]
    target = (y + 1) % 10
    r = HopSkipJump(
        ThreatModel(Norm.L2, 3.0, targeted=True), max_queries=600, init_evals=30, max_evals=100, init_tries=200
    ).run(digits_model.classifier, x, y, target=target, generator=_seed())
    assert r.success.any() and torch.equal(r.adv_labels[r.success], target[r.success])


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="max_queries must be an int >= 10"):
        HopSkipJump(ThreatModel(), max_queries=5)
    with pytest.raises(ConfigError, match="gamma"):
        HopSkipJump(ThreatModel(), gamma=0.0)
