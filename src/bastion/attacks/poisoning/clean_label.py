"""Clean-label backdoor: the poisoned inputs keep their correct labels, so no label audit can find them.

Paper: Turner, Tsipras & Madry, "Label-Consistent Backdoor Attacks", 2019. Inputs of the target class are first
made hard to classify by an adversarial perturbation (PGD against a surrogate model the attacker trained on clean
data of the same kind), then stamped with the trigger; a model that cannot learn them from their now-garbled
content learns the trigger instead. The labels are all correct. MITRE ATLAS AML.T0020 / AML.T0018.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from bastion.attacks.poisoning.base import (
    POISONING_ATTACKS,
    PoisonedSet,
    check_class,
    check_inputs,
    check_rate,
    pick,
    triggered_others,
)
from bastion.attacks.poisoning.triggers import PatchTrigger
from bastion.errors import ConfigError
from bastion.types import ModelSpec


@POISONING_ATTACKS.register("clean-label")
@dataclass(frozen=True)
class CleanLabel:
    """Turner et al.'s attack: PGD (Linf ``eps``, ``steps``) away from the true class against ``surrogate``, then
    the patch ``trigger``; ``rate * N`` inputs of class ``target`` are poisoned and no label changes."""

    name: ClassVar[str] = "clean-label"
    atlas: ClassVar[str] = "AML.T0020"
    target: int = 0
    trigger: PatchTrigger = field(default_factory=PatchTrigger)
    eps: float = 0.15
    steps: int = 20
    surrogate: Any = field(default=None, compare=False)

    def problems(self, spec: ModelSpec) -> list[str]:
        out = check_class("target", self.target, spec) + self.trigger.problems(spec)
        if not isinstance(self.eps, (int, float)) or not math.isfinite(self.eps) or self.eps <= 0:
            out.append(f"eps must be a number > 0, got {self.eps!r}")
        if not isinstance(self.steps, int) or self.steps < 1:
            out.append(f"steps must be an int >= 1, got {self.steps!r}")
        return out

    def with_surrogate(self, surrogate: Any) -> CleanLabel:
        """This attack with the differentiable model its perturbations are computed against."""
        return CleanLabel(self.target, self.trigger, self.eps, self.steps, surrogate)

    def poison(self, x: Tensor, y: Tensor, spec: ModelSpec, *, rate: float, generator: torch.Generator) -> PoisonedSet:
        from bastion.attacks.evasion.pgd import PGD
        from bastion.types import Norm, ThreatModel

        rate = check_rate(rate)
        check_inputs(x, y, spec)
        problems = self.problems(spec)
        if problems:
            raise ConfigError("invalid clean-label settings", problems=problems)
        if self.surrogate is None or not hasattr(self.surrogate, "logits"):
            raise ConfigError(
                "the clean-label attack perturbs its inputs against a differentiable surrogate model: "
                "give one with .with_surrogate(model) (the poisoning assessment uses a model trained on clean data)"
            )
        idx = pick(
            (y == self.target).nonzero().flatten(),
            round(rate * y.shape[0]),
            generator,
            f"inputs of class {self.target}",
        )
        pgd = PGD(ThreatModel(Norm.LINF, float(self.eps)), steps=self.steps, early_stop=False)
        hard = pgd.run(self.surrogate, x[idx], y[idx], generator=generator).x_adv
        px = x.clone()
        px[idx] = self.trigger.apply(hard, spec)
        mask = torch.zeros(y.shape[0], dtype=torch.bool)
        mask[idx] = True
        return PoisonedSet(px, y.clone(), mask, self.name, self.target, None, self.to_dict() | {"rate": rate})

    def triggered(self, x: Tensor, y: Tensor, spec: ModelSpec) -> tuple[Tensor, Tensor] | None:
        return triggered_others(self, x, y, spec)

    def to_dict(self) -> dict[str, Any]:
        return {
            "attack": self.name,
            "target": self.target,
            "trigger": self.trigger.to_dict(),
            "eps": self.eps,
            "steps": self.steps,
        }
