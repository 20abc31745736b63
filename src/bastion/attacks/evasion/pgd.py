"""Projected Gradient Descent with random start, restarts and per-sample early stopping."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from bastion.attacks._losses import LOSSES, succeeded
from bastion.attacks._projection import normalize_step, project, random_start
from bastion.attacks.base import (
    ATTACKS,
    AttackState,
    EvasionAttack,
    check_positive_float,
    check_positive_int,
)
from bastion.types import Bounds


@ATTACKS.register("pgd")
@dataclass(frozen=True)
class PGD(EvasionAttack):
    """Iterated gradient steps, each projected back onto the eps-ball and the value bounds.

    Paper: Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to Adversarial
    Attacks", ICLR 2018. Threat model: white-box, Linf or L2, targeted or not.

    Args:
        threat: norm, eps, optional bounds, targeted.
        steps: gradient steps per restart.
        step_size: step length; ``None`` uses Madry et al.'s 2.5 * eps / steps.
        random_start: begin at a uniformly random point of the eps-ball (else at x).
        restarts: further random starts, each spent only on inputs not yet broken.
        loss: "ce" (cross-entropy) or "margin" (Carlini-Wagner margin).
        early_stop: stop attacking an input as soon as it is misclassified (keeping that iterate). Strictly
            stronger for evaluation and cheaper; set False to get the final iterate for every input (as
            adversarial training wants).

    Shapes: x (N, *input_shape) within bounds, y (N,) int64; returns an AttackResult with N rows.

    Example::

        PGD(ThreatModel(Norm.LINF, eps=0.1), steps=20, step_size=0.01).run(clf, x, y, generator=g)
    """

    name: ClassVar[str] = "pgd"
    steps: int = 20
    step_size: float | None = None
    random_start: bool = True
    restarts: int = 1
    loss: str = "ce"
    early_stop: bool = True

    def _check_settings(self) -> list[str]:
        problems: list[str] = []
        check_positive_int("steps", self.steps, problems)
        check_positive_int("restarts", self.restarts, problems)
        check_positive_float("step_size", self.step_size, problems, allow_none=True)
        if self.loss not in LOSSES:
            problems.append(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if not isinstance(self.random_start, bool):
            problems.append(f"random_start must be true or false, got {self.random_start!r}")
        return problems

    @property
    def alpha(self) -> float:
        return self.step_size if self.step_size is not None else 2.5 * self.threat.eps / self.steps

    def _perturb(
        self,
        model: Any,
        x: Tensor,
        labels: Tensor,
        bounds: Bounds,
        generator: torch.Generator | None,
        state: AttackState,
    ) -> None:
        eps, norm, targeted = self.threat.eps, self.threat.norm, self.threat.targeted
        loss_fn, alpha = LOSSES[self.loss], self.alpha
        n = x.shape[0]
        x_out, done, queries = state.x_adv, state.done, state.queries
        for restart in range(self.restarts):
            idx = (~done).nonzero().squeeze(1) if self.early_stop else torch.arange(n, device=x.device)
            if idx.numel() == 0:
                break
            x0, lab = x[idx], labels[idx]
            xa = random_start(x0, eps, norm, bounds, generator) if self.random_start or restart else x0.clone()
            for _ in range(self.steps):
                xa.requires_grad_(True)
                logits = model.logits(xa)
                loss = loss_fn(logits, lab, targeted=targeted).sum()
                (grad,) = torch.autograd.grad(loss, xa)
                xa = xa.detach()
                queries[idx] += 1
                if self.early_stop:
                    hit = succeeded(logits.detach().argmax(1), lab, targeted=targeted)
                    if bool(hit.any()):
                        won = idx[hit]
                        x_out[won] = xa[hit]
                        done[won] = True
                        keep = ~hit
                        idx, x0, lab, xa, grad = idx[keep], x0[keep], lab[keep], xa[keep], grad[keep]
                        if idx.numel() == 0:
                            break
                with torch.no_grad():
                    xa = project(xa + alpha * normalize_step(grad, norm), x0, eps, norm, bounds)
            if idx.numel():
                x_out[idx] = xa
