"""Attacks for red-teaming: the Attack protocol, its result, the registry and the algorithms."""

from __future__ import annotations

import dataclasses
from typing import Any

from bastion.attacks.base import ATTACKS, Attack, AttackResult, EvasionAttack
from bastion.attacks.evasion import APGD, APGDT, FGSM, PGD, CarliniWagnerL2, HopSkipJump, SimBA, Square
from bastion.attacks.suites import AutoAttack, Cascade, CascadeResult
from bastion.errors import ConfigError
from bastion.types import Norm, ThreatModel

__all__ = [
    "APGD",
    "APGDT",
    "ATTACKS",
    "FGSM",
    "PGD",
    "Attack",
    "AttackResult",
    "AutoAttack",
    "CarliniWagnerL2",
    "Cascade",
    "CascadeResult",
    "EvasionAttack",
    "HopSkipJump",
    "SimBA",
    "Square",
    "create_attack",
]


def create_attack(name: str, threat: ThreatModel | None = None, **params: Any) -> Attack:
    """Build a registered attack by name, e.g. ``create_attack("pgd", ThreatModel(Norm.L2, 0.5), steps=40)``."""
    cls = ATTACKS.get(name)
    allowed = {f.name for f in dataclasses.fields(cls)} - {"threat"}  # type: ignore[arg-type]
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ConfigError(
            f"{name} has no setting(s) {', '.join(unknown)}; its settings are: {', '.join(sorted(allowed))}"
        )
    return cls(threat=threat or ThreatModel(norm=Norm.LINF, eps=0.1), **params)  # type: ignore[call-arg]
