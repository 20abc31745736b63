"""FGSM and PGD against naive reference implementations, and their expected relative strength."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bastion import FGSM, PGD, ConfigError, Norm, ThreatModel
from bastion.data import Dataset
from bastion.models.zoo import TrainedModel


def _grad(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    F.cross_entropy(module(x), y, reduction="sum").backward()
    assert x.grad is not None
    return x.grad


def _l2_unit(g: torch.Tensor) -> torch.Tensor:
    return g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)


def _l2_project(xa: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    d = xa - x
    n = d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    return (x + d * torch.clamp(eps / n.clamp_min(1e-12), max=1.0)).clamp(0, 1)


def test_fgsm_linf_matches_naive_reference(
    digits_model: TrainedModel, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = batch
    ref = (x + 0.1 * _grad(digits_model.module, x, y).sign()).clamp(0, 1)
    got = FGSM(ThreatModel(Norm.LINF, 0.1)).run(digits_model.classifier, x, y).x_adv
    assert torch.allclose(got, ref, atol=1e-6)


def test_fgsm_l2_matches_naive_reference(digits_model: TrainedModel, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    ref = _l2_project(x + 0.5 * _l2_unit(_grad(digits_model.module, x, y)), x, 0.5)
    got = FGSM(ThreatModel(Norm.L2, 0.5)).run(digits_model.classifier, x, y).x_adv
    assert torch.allclose(got, ref, atol=1e-6)


@pytest.mark.parametrize("norm", [Norm.LINF, Norm.L2])
def test_pgd_without_early_stop_matches_naive_loop(
    norm: Norm, digits_model: TrainedModel, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = batch
    eps, alpha, steps = (0.1, 0.02, 10) if norm is Norm.LINF else (0.5, 0.1, 10)
    xa = x.clone()
    for _ in range(steps):
        g = _grad(digits_model.module, xa, y)
        if norm is Norm.LINF:
            xa = torch.min(torch.max(xa + alpha * g.sign(), x - eps), x + eps).clamp(0, 1)
        else:
            xa = _l2_project(xa + alpha * _l2_unit(g), x, eps)
    attack = PGD(ThreatModel(norm, eps), steps=steps, step_size=alpha, random_start=False, early_stop=False)
    r = attack.run(digits_model.classifier, x, y)
    assert torch.allclose(r.x_adv, xa, atol=1e-5)
    assert bool((r.queries == steps + 1).all())


def test_early_stop_only_adds_successes(digits_model: TrainedModel, digits: Dataset) -> None:
    x, y = digits.x_test[:200], digits.y_test[:200]
    threat = ThreatModel(Norm.LINF, 0.1)
    late = PGD(threat, steps=20, early_stop=False).run(
        digits_model.classifier, x, y, generator=torch.Generator().manual_seed(0)
    )
    early = PGD(threat, steps=20).run(digits_model.classifier, x, y, generator=torch.Generator().manual_seed(0))
    assert int((late.success & ~early.success).sum()) == 0
    assert float(early.queries.float().mean()) < float(late.queries.float().mean())


def test_pgd_is_at_least_as_strong_as_fgsm_and_restarts_only_help(digits_model: TrainedModel, digits: Dataset) -> None:
    x, y = digits.x_test, digits.y_test
    threat = ThreatModel(Norm.LINF, 0.1)
    fgsm = FGSM(threat).run(digits_model.classifier, x, y)
    one = PGD(threat, steps=20).run(digits_model.classifier, x, y, generator=torch.Generator().manual_seed(0))
    three = PGD(threat, steps=20, restarts=3).run(
        digits_model.classifier, x, y, generator=torch.Generator().manual_seed(0)
    )
    assert one.success_rate >= fgsm.success_rate
    assert int((one.success & ~three.success).sum()) == 0
    assert three.success_rate >= one.success_rate


def test_targeted_pgd_reaches_the_target(digits_model: TrainedModel, digits: Dataset) -> None:
    x, y = digits.x_test[:100], digits.y_test[:100]
    target = (y + 1) % 10
    r = PGD(ThreatModel(Norm.LINF, 0.3, targeted=True), steps=40).run(
        digits_model.classifier, x, y, target=target, generator=torch.Generator().manual_seed(0)
    )
    assert r.success_rate > 0.9
    assert torch.equal(r.adv_labels[r.success], target[r.success])


def test_threat_bounds_override_the_model_bounds(digits_model: TrainedModel) -> None:
    x = torch.full((4, 1, 8, 8), 0.5)
    y = torch.zeros(4, dtype=torch.long)
    r = PGD(ThreatModel(Norm.LINF, 0.3, bounds=(0.4, 0.6)), steps=5).run(digits_model.classifier, x, y)
    assert bool(r.x_adv.min() >= torch.tensor(0.4)) and bool(r.x_adv.max() <= torch.tensor(0.6))
    assert float(r.x_adv.max()) > 0.55  # the attack did move, and the bounds cut it off


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 0}, "steps must be an int >= 1"),
        ({"step_size": -1.0}, "step_size"),
        ({"restarts": 0}, "restarts"),
        ({"loss": "hinge"}, "loss must be one of"),
    ],
)
def test_pgd_settings_are_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PGD(ThreatModel(), **kwargs)  # type: ignore[arg-type]


def test_margin_loss_pgd_works(digits_model: TrainedModel, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    ce = PGD(ThreatModel(Norm.LINF, 0.2)).run(digits_model.classifier, x, y, generator=torch.Generator().manual_seed(0))
    cw = PGD(ThreatModel(Norm.LINF, 0.2), loss="margin").run(
        digits_model.classifier, x, y, generator=torch.Generator().manual_seed(0)
    )
    assert cw.success_rate > 0.5 and ce.success_rate > 0.5
