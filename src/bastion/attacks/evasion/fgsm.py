"""Fast Gradient (Sign) Method."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from bastion.attacks._losses import LOSSES
from bastion.attacks._projection import normalize_step, project
from bastion.attacks.base import ATTACKS, AttackState, EvasionAttack
from bastion.types import Bounds


@ATTACKS.register("fgsm")
@dataclass(frozen=True)
class FGSM(EvasionAttack):
    """One gradient step of size eps: the sign of the loss gradient (Linf) or its unit direction (L2).

    Paper: Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015
    (the L2 variant is the Fast Gradient Method). Threat model: white-box, Linf or L2, targeted or not.

    Args:
        threat: norm, eps, optional bounds, targeted.
        loss: "ce" (cross-entropy) or "margin" (Carlini-Wagner margin).

    Shapes: x (N, *input_shape) within bounds, y (N,) int64; returns an AttackResult with N rows.

    Example::

        FGSM(ThreatModel(Norm.LINF, eps=0.1)).run(clf, x, y).success_rate
    """

    name: ClassVar[str] = "fgsm"
    loss: str = "ce"

    def _check_settings(self) -> list[str]:
        if self.loss not in LOSSES:
            return [f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}"]
        return []

    def _perturb(
        self,
        model: Any,
        x: Tensor,
        labels: Tensor,
        bounds: Bounds,
        generator: torch.Generator | None,
        state: AttackState,
    ) -> None:
        loss_fn = LOSSES[self.loss]
        xa = x.clone().requires_grad_(True)
        loss = loss_fn(model.logits(xa), labels, targeted=self.threat.targeted).sum()
        (grad,) = torch.autograd.grad(loss, xa)
        with torch.no_grad():
            stepped = x + self.threat.eps * normalize_step(grad, self.threat.norm)
            x_adv = project(stepped, x, self.threat.eps, self.threat.norm, bounds)
        state.x_adv.copy_(x_adv)
        state.queries += 1
