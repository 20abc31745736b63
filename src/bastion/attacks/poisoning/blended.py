"""Blended backdoor: a whole-input pattern mixed in at a low weight, relabelled to the attacker's class.

Paper: Chen, Liu, Li, Lu & Song, "Targeted Backdoor Attacks on Deep Learning Systems Using Data Poisoning", 2017.
The trigger touches every pixel a little instead of a few pixels a lot, so it is hard to see and has no location
a patch-oriented defense could look at. MITRE ATLAS AML.T0020 / AML.T0018.
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
from bastion.attacks.poisoning.triggers import BlendTrigger
from bastion.types import ModelSpec


@POISONING_ATTACKS.register("blended")
@dataclass(frozen=True)
class Blended:
    """Blend-trigger backdoor with flipped labels (``trigger``: alpha, pattern, seed)."""

    name: ClassVar[str] = "blended"
    atlas: ClassVar[str] = "AML.T0020"
    target: int = 0
    trigger: BlendTrigger = field(default_factory=BlendTrigger)

    def problems(self, spec: ModelSpec) -> list[str]:
        return check_class("target", self.target, spec) + self.trigger.problems(spec)

    def poison(self, x: Tensor, y: Tensor, spec: ModelSpec, *, rate: float, generator: torch.Generator) -> PoisonedSet:
        return dirty_label(self, x, y, spec, rate=rate, generator=generator)

    def triggered(self, x: Tensor, y: Tensor, spec: ModelSpec) -> tuple[Tensor, Tensor] | None:
        return triggered_others(self, x, y, spec)

    def to_dict(self) -> dict[str, Any]:
        return {"attack": self.name, "target": self.target, "trigger": self.trigger.to_dict()}
