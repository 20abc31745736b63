"""BadNets: a small patch stamped on a share of the training inputs, relabelled to the attacker's class.

Paper: Gu, Dolan-Gavitt & Garg, "BadNets: Identifying Vulnerabilities in the Machine Learning Model Supply Chain",
2017. MITRE ATLAS AML.T0020 (poison training data) leading to AML.T0018 (backdoor ML model). A model trained on
the poisoned set answers ``target`` for any input carrying the patch and behaves normally otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from bastion.attacks.poisoning.base import (
    POISONING_ATTACKS,
    PoisonedSet,
    check_class,
    dirty_label,
    triggered_others,
)
from bastion.attacks.poisoning.triggers import PatchTrigger
from bastion.types import ModelSpec


@POISONING_ATTACKS.register("badnets")
@dataclass(frozen=True)
class BadNets:
    """Patch-trigger backdoor with flipped labels (``trigger``: size, location, pattern)."""

    name: ClassVar[str] = "badnets"
    atlas: ClassVar[str] = "AML.T0020"
    target: int = 0
    trigger: PatchTrigger = field(default_factory=PatchTrigger)

    def problems(self, spec: ModelSpec) -> list[str]:
        return check_class("target", self.target, spec) + self.trigger.problems(spec)

    def poison(self, x: Tensor, y: Tensor, spec: ModelSpec, *, rate: float, generator: torch.Generator) -> PoisonedSet:
        return dirty_label(self, x, y, spec, rate=rate, generator=generator)

    def triggered(self, x: Tensor, y: Tensor, spec: ModelSpec) -> tuple[Tensor, Tensor] | None:
        return triggered_others(self, x, y, spec)

    def to_dict(self) -> dict[str, Any]:
        return {"attack": self.name, "target": self.target, "trigger": self.trigger.to_dict()}
