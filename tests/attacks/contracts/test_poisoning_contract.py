"""One contract over every registered poisoning attack: a copy (inputs untouched), exactly the reported rows
changed, values in bounds, the count the rate asks for, the same set for the same seed, rates outside (0, 1)
refused."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from bastion.attacks.poisoning import POISONING_ATTACKS, PatchTrigger
from bastion.data import Dataset
from bastion.errors import ConfigError
from bastion.models.zoo import TrainedModel

SETTINGS: dict[str, dict[str, Any]] = {
    "adaptive-blend": {"target": 4},
    "badnets": {"target": 1, "trigger": PatchTrigger(size=2)},
    "blended": {"target": 2},
    "clean-label": {"target": 3, "trigger": PatchTrigger(size=2), "steps": 3},
    "label-flip": {},
}


def _attack(name: str, model: TrainedModel) -> Any:
    attack = POISONING_ATTACKS.get(name)(**SETTINGS[name])
    return attack.with_surrogate(model.classifier) if hasattr(attack, "with_surrogate") else attack


def test_every_attack_has_contract_settings() -> None:
    assert set(SETTINGS) == set(POISONING_ATTACKS.names())


@pytest.mark.parametrize("name", POISONING_ATTACKS.names())
def test_poisoning_contract(name: str, digits: Dataset, digits_model: TrainedModel) -> None:
    attack = _attack(name, digits_model)
    assert attack.name == name and attack.atlas.startswith("AML.T")
    x, y = digits.x_train[:600].clone(), digits.y_train[:600].clone()
    x0, y0 = x.clone(), y.clone()
    ps = attack.poison(x, y, digits.spec, rate=0.05, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, x0) and torch.equal(y, y0), "poison must not modify its inputs"
    relabelled = ps.params.get("relabelled")  # an attack with cover rows reports the backdoor's own rows
    assert (len(relabelled) if relabelled is not None else ps.count) == 30 and ps.poisoned.shape == (600,)
    changed = (ps.x != x).flatten(1).any(1) | (ps.y != y)
    assert torch.equal(changed, ps.poisoned), "exactly the reported rows change"
    assert float(ps.x.min()) >= 0.0 and float(ps.x.max()) <= 1.0
    again = attack.poison(x, y, digits.spec, rate=0.05, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.x, ps.x) and torch.equal(again.y, ps.y)
    got = attack.triggered(digits.x_test[:50], digits.y_test[:50], digits.spec)
    if got is not None:
        xt, counts = got
        assert xt.shape == (50, *digits.spec.input_shape) and counts.dtype == torch.bool
    for bad in (0, 1, -0.1, 1.5, float("nan"), True):
        with pytest.raises(ConfigError, match=r"\(0, 1\)"):
            attack.poison(x, y, digits.spec, rate=bad, generator=torch.Generator().manual_seed(0))
