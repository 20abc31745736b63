"""An AutoAttack-grade evaluation: APGD-CE, then APGD-T over the top classes, then Square — as data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from bastion.attacks.base import ATTACKS, AttackState, EvasionAttack, check_positive_int
from bastion.attacks.evasion.apgd import APGD, APGDT
from bastion.attacks.evasion.square import Square
from bastion.attacks.suites.cascade import Cascade
from bastion.types import Bounds

# Each preset is a tuple of (attack class, settings); `steps` / `max_queries` come from the AutoAttack settings.
PRESETS: dict[str, tuple[tuple[type[EvasionAttack], dict[str, Any]], ...]] = {
    "standard": (
        (APGD, {"loss": "ce"}),
        (APGDT, {"loss": "dlr"}),
        (Square, {}),
    ),
    "fast": (
        (APGD, {"loss": "ce"}),
        (APGD, {"loss": "dlr"}),
    ),
}


@ATTACKS.register("autoattack")
@dataclass(frozen=True)
class AutoAttack(EvasionAttack):
    """A parameter-free ensemble run as a cascade: each component attacks only what the previous ones left.

    Paper: Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks", ICML 2020 (the "standard" preset: APGD-CE, APGD-T, Square; FAB-T is left out since
    it rarely adds to the other three). Threat model: white-box, Linf or L2, untargeted.

    Args:
        preset: "standard" (APGD-CE, APGD-T, Square) or "fast" (APGD-CE, APGD-DLR).
        steps: APGD iterations (100 in the paper).
        n_target_classes: classes APGD-T aims at (9 in the paper).
        square_queries: Square's query budget (5,000 in the paper).

    The result's ``details["contributions"]`` says how many inputs each component broke.

    Example::

        AutoAttack(ThreatModel(Norm.LINF, eps=8 / 255)).run(clf, x, y, generator=g).details["contributions"]
    """

    name: ClassVar[str] = "autoattack"
    supports_targeted: ClassVar[bool] = False
    preset: str = "standard"
    steps: int = 100
    n_target_classes: int = 9
    square_queries: int = 5000

    def _check_settings(self) -> list[str]:
        problems: list[str] = []
        if self.preset not in PRESETS:
            problems.append(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        check_positive_int("steps", self.steps, problems)
        check_positive_int("n_target_classes", self.n_target_classes, problems)
        check_positive_int("square_queries", self.square_queries, problems, minimum=2)
        return problems

    def components(self) -> Cascade:
        """The configured cascade this AutoAttack runs."""
        attacks = []
        names = []
        for cls, params in PRESETS[self.preset]:
            kw = dict(params)
            if cls is Square:
                kw["max_queries"] = self.square_queries
            else:
                kw["steps"] = self.steps
            if cls is APGDT:
                kw["n_target_classes"] = self.n_target_classes
            attacks.append(cls(threat=self.threat, **kw))
            names.append(f"{cls.name}-{kw['loss']}" if cls is APGD else cls.name)
        return Cascade(tuple(attacks), names=tuple(names))

    def _perturb(
        self,
        model: Any,
        x: Tensor,
        labels: Tensor,
        bounds: Bounds,
        generator: torch.Generator | None,
        state: AttackState,
    ) -> None:
        r = self.components().run(model, x, labels, generator=generator)
        state.x_adv.copy_(r.x_adv.to(x.device))
        state.queries += r.queries.to(x.device)
        state.done |= r.success.to(x.device)
        state.details.update(contributions=r.contributions, component_seconds=r.seconds)
