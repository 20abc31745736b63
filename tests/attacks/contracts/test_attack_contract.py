"""One contract over every registered attack: threat model kept, dtype/device kept, seeded, clear errors."""

from __future__ import annotations

import itertools

import pytest
import torch
from sklearn.linear_model import LogisticRegression

from bastion import ATTACKS, ConfigError, InputValidationError, Norm, SklearnClassifier, ThreatModel, create_attack
from bastion.data import Dataset
from bastion.models.zoo import TrainedModel

EPS = {Norm.LINF: 0.1, Norm.L2: 0.5}
# Smaller budgets keep the contract fast; the benchmarks run the reference settings.
FAST = {
    "apgd": {"steps": 20},
    "apgd-t": {"steps": 10, "n_target_classes": 3},
    "autoattack": {"steps": 10, "n_target_classes": 2, "square_queries": 50},
    "cw": {"steps": 20, "binary_search_steps": 2},
    "hopskipjump": {"max_queries": 300, "init_evals": 20, "max_evals": 40, "init_tries": 20},
    "simba": {"max_queries": 100},
    "square": {"max_queries": 100},
}
CASES = [
    (name, norm, targeted)
    for name, targeted in itertools.product(ATTACKS.names(), (False, True))
    if ATTACKS.get(name).supports_targeted or not targeted  # type: ignore[attr-defined]
    for norm in sorted(ATTACKS.get(name).norms, key=lambda n: n.value)  # type: ignore[attr-defined]
]


def _attack(name: str, norm: Norm, targeted: bool):  # type: ignore[no-untyped-def]
    return create_attack(name, ThreatModel(norm=norm, eps=EPS[norm], targeted=targeted), **FAST.get(name, {}))


def _targets(y: torch.Tensor) -> torch.Tensor:
    return (y + 3) % 10


def test_every_attack_is_covered() -> None:
    assert {"fgsm", "pgd", "apgd", "apgd-t", "square", "autoattack"} <= set(ATTACKS.names())
    assert {name for name, _, _ in CASES} == set(ATTACKS.names())


@pytest.mark.parametrize(("name", "norm", "targeted"), CASES)
def test_result_respects_threat_model_and_types(
    name: str, norm: Norm, targeted: bool, digits_model: TrainedModel, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = batch
    attack = _attack(name, norm, targeted)
    target = _targets(y) if targeted else None
    r = attack.run(digits_model.classifier, x, y, target=target, generator=torch.Generator().manual_seed(1))
    delta = (r.x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm is Norm.LINF else delta.norm(dim=1)
    assert float(size.max()) <= EPS[norm] + 1e-5
    assert torch.allclose(size, r.norms, atol=1e-6)
    assert float(r.x_adv.min()) >= 0.0 and float(r.x_adv.max()) <= 1.0
    assert r.x_adv.dtype == x.dtype and r.x_adv.device == x.device and r.x_adv.shape == x.shape
    n = x.shape[0]
    assert r.success.shape == r.norms.shape == r.queries.shape == r.adv_labels.shape == (n,)
    expected = r.adv_labels == target if targeted else r.adv_labels != y
    assert torch.equal(r.success, expected)
    assert bool((r.queries >= 1).all()) and r.attack == name and r.threat.norm is norm
    assert 0.0 <= r.success_rate <= 1.0 and r.seconds > 0
    assert x.grad is None and not r.x_adv.requires_grad


@pytest.mark.parametrize(("name", "norm", "targeted"), CASES)
def test_seeded_generator_makes_runs_identical(
    name: str, norm: Norm, targeted: bool, digits_model: TrainedModel, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = batch
    attack = _attack(name, norm, targeted)
    target = _targets(y) if targeted else None
    a = attack.run(digits_model.classifier, x, y, target=target, generator=torch.Generator().manual_seed(7))
    b = attack.run(digits_model.classifier, x, y, target=target, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_bad_arguments_give_clear_errors(
    name: str, digits_model: TrainedModel, batch: tuple[torch.Tensor, torch.Tensor], digits: Dataset
) -> None:
    x, y = batch
    model = digits_model.classifier
    norm = Norm.LINF if Norm.LINF in ATTACKS.get(name).norms else Norm.L2  # type: ignore[attr-defined]
    attack = _attack(name, norm, False)
    cases: list[tuple[dict[str, object], str]] = [
        ({"x": x.flatten(1)}, "must have shape (N, 1, 8, 8)"),
        ({"x": x.clone().fill_(float("nan"))}, "NaN"),
        ({"x": x + 2.0}, "values must lie in [0, 1]"),
        ({"x": x.double().long()}, "floating dtype"),
        ({"y": y + 10}, "class indices in [0, 9]"),
        ({"y": y[:5]}, "give one label per input"),
        ({"y": y.float()}, "integer class indices"),
        ({"target": y}, "untargeted"),
        ({"generator": 42}, "torch.Generator"),
    ]
    for override, message in cases:
        kwargs: dict[str, object] = {"x": x, "y": y, "target": None, "generator": None} | override
        with pytest.raises(InputValidationError) as info:
            attack.run(model, kwargs["x"], kwargs["y"], target=kwargs["target"], generator=kwargs["generator"])  # type: ignore[arg-type]
        assert message in str(info.value), (override, str(info.value))
    if ATTACKS.get(name).supports_targeted:  # type: ignore[attr-defined]
        targeted = _attack(name, norm, True)
        with pytest.raises(InputValidationError, match="pass target="):
            targeted.run(model, x, y)
        with pytest.raises(InputValidationError, match=r"target values must be class indices"):
            targeted.run(model, x, y, target=y + 20)
    else:
        with pytest.raises(ConfigError, match="chooses its own targets"):
            _attack(name, norm, True)
    with pytest.raises(ConfigError, match="eps must be a finite number > 0"):
        create_attack(name, ThreatModel(norm=norm, eps=-1.0))
    with pytest.raises(ConfigError, match="has no setting"):
        create_attack(name, ThreatModel(norm=norm), no_such_setting=1)
    with pytest.raises(ConfigError, match="must be a bastion Classifier"):
        attack.run(object(), x, y)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", [n for n in ATTACKS.names() if ATTACKS.get(n).white_box])  # type: ignore[attr-defined]
def test_white_box_attacks_refuse_black_box_models(name: str, digits: Dataset) -> None:
    est = LogisticRegression(max_iter=200).fit(digits.x_train.flatten(1).numpy(), digits.y_train.numpy())
    norm = Norm.LINF if Norm.LINF in ATTACKS.get(name).norms else Norm.L2  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="white-box attack"):
        _attack(name, norm, False).run(SklearnClassifier(est, digits.spec), digits.x_test[:4], digits.y_test[:4])


@pytest.mark.parametrize("name", [n for n in ATTACKS.names() if not ATTACKS.get(n).white_box])  # type: ignore[attr-defined]
def test_black_box_attacks_need_only_scores(name: str, digits: Dataset) -> None:
    est = LogisticRegression(max_iter=300).fit(digits.x_train.flatten(1).numpy(), digits.y_train.numpy())
    model = SklearnClassifier(est, digits.spec)
    x, y = digits.x_test[:16], digits.y_test[:16]
    r = _attack(name, Norm.LINF, False).run(model, x, y, generator=torch.Generator().manual_seed(0))
    assert float((r.x_adv - x).abs().amax()) <= 0.1 + 1e-6 and r.success_rate > 0
    assert model.queries >= int(r.queries.sum())
