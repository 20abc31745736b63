"""Auto-PGD: step-size-free PGD with momentum and checkpoints (the core of AutoAttack)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from bastion.attacks._losses import LOSSES, succeeded
from bastion.attacks._projection import normalize_step, project, random_start
from bastion.attacks.base import ATTACKS, AttackState, EvasionAttack, check_positive_int
from bastion.types import Bounds


def checkpoints(steps: int) -> list[int]:
    """Iterations at which APGD may halve its step: p_0=0, p_1=0.22, p_{j+1}=p_j+max(p_j-p_{j-1}-0.03, 0.06)."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(q * steps) for q in p[1:] if q <= 1})


@ATTACKS.register("apgd")
@dataclass(frozen=True)
class APGD(EvasionAttack):
    """PGD whose step size adapts per input: halved at checkpoints when progress stalls, restarting from the best.

    Paper: Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
    attacks", ICML 2020. Threat model: white-box, Linf or L2, targeted or not.

    Args:
        threat: norm, eps, optional bounds, targeted.
        steps: iterations per restart (100 in the paper).
        loss: "ce" (cross-entropy), "dlr" (difference of logits ratio, scale-invariant) or "margin".
        restarts: random restarts, each spent only on inputs not yet broken.
        rho: a checkpoint halves the step when fewer than this fraction of steps since the last one improved.
        momentum: weight of the new step against the previous one (alpha in the paper).

    Shapes: x (N, *input_shape) within bounds, y (N,) int64; returns an AttackResult with N rows. An input stops
    being attacked once misclassified (the adversarial iterate is kept).

    Example::

        APGD(ThreatModel(Norm.LINF, eps=0.1), loss="dlr").run(clf, x, y, generator=g)
    """

    name: ClassVar[str] = "apgd"
    steps: int = 100
    loss: str = "ce"
    restarts: int = 1
    rho: float = 0.75
    momentum: float = 0.75

    def _check_settings(self) -> list[str]:
        problems: list[str] = []
        check_positive_int("steps", self.steps, problems)
        check_positive_int("restarts", self.restarts, problems)
        if self.loss not in LOSSES:
            problems.append(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        for nm in ("rho", "momentum"):
            v = getattr(self, nm)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
                problems.append(f"{nm} must be in (0, 1], got {v!r}")
        return problems

    def _perturb(
        self,
        model: Any,
        x: Tensor,
        labels: Tensor,
        bounds: Bounds,
        generator: torch.Generator | None,
        state: AttackState,
    ) -> None:
        targeted = self.threat.targeted
        for idx in state.pending(self.restarts):
            self._run_once(
                model,
                x,
                labels,
                labels,
                targeted,
                targeted,
                idx,
                bounds,
                generator,
                state.x_adv,
                state.done,
                state.queries,
            )

    def _loss_grad(self, model: Any, xa: Tensor, lab: Tensor, targeted: bool) -> tuple[Tensor, Tensor, Tensor]:
        xa = xa.detach().requires_grad_(True)
        logits = model.logits(xa)
        loss = LOSSES[self.loss](logits, lab, targeted=targeted)
        (grad,) = torch.autograd.grad(loss.sum(), xa)
        return loss.detach(), logits.detach(), grad.detach()

    def _run_once(
        self,
        model: Any,
        x: Tensor,
        loss_labels: Tensor,
        success_labels: Tensor,
        targeted_loss: bool,
        targeted_success: bool,
        idx: Tensor,
        bounds: Bounds,
        generator: torch.Generator | None,
        x_out: Tensor,
        done: Tensor,
        queries: Tensor,
    ) -> None:
        """One APGD run on inputs ``idx``: the loss pulls towards/away from ``loss_labels``; success is judged
        against ``success_labels`` (APGD-T optimises towards a target but counts any misclassification)."""
        eps, norm = self.threat.eps, self.threat.norm
        ckpts = set(checkpoints(self.steps))
        x0, lab = x[idx], loss_labels[idx]
        xk = random_start(x0, eps, norm, bounds, generator)
        loss, logits, grad = self._loss_grad(model, xk, lab, targeted_loss)
        queries[idx] += 1
        b = idx.numel()
        shape = (-1,) + (1,) * (x.dim() - 1)
        state = {
            "x0": x0,
            "lab": lab,
            "ylab": success_labels[idx],
            "xk": xk,
            "x_prev": xk.clone(),
            "grad": grad,
            "loss": loss,
            "x_max": xk.clone(),
            "f_max": loss.clone(),
            "grad_max": grad.clone(),
            "eta": torch.full((b,), 2.0 * eps, device=x.device, dtype=x.dtype),
            "n_incr": torch.zeros(b, device=x.device),
            "f_ckpt": loss.clone(),
            "reduced": torch.zeros(b, dtype=torch.bool, device=x.device),
        }

        def harvest(logits: Tensor, xa: Tensor) -> bool:
            """Record newly broken inputs and drop them from the active set; True when none are left."""
            nonlocal idx
            hit = succeeded(logits.argmax(1), state["ylab"], targeted=targeted_success)
            if bool(hit.any()):
                won = idx[hit]
                x_out[won] = xa[hit]
                done[won] = True
                keep = ~hit
                idx = idx[keep]
                for k in state:
                    state[k] = state[k][keep]
            return idx.numel() == 0

        if harvest(logits, xk):
            return
        last_ckpt = 0
        for it in range(1, self.steps):
            s = state
            eta = s["eta"].view(shape)
            z = project(s["xk"] + eta * normalize_step(s["grad"], norm), s["x0"], eps, norm, bounds)
            a = 1.0 if it == 1 else self.momentum
            x_new = project(s["xk"] + a * (z - s["xk"]) + (1 - a) * (s["xk"] - s["x_prev"]), s["x0"], eps, norm, bounds)
            loss, logits, grad = self._loss_grad(model, x_new, s["lab"], targeted_loss)
            queries[idx] += 1
            s["n_incr"] += (loss > s["loss"]).float()
            better = loss > s["f_max"]
            s["x_max"] = torch.where(better.view(shape), x_new, s["x_max"])
            s["grad_max"] = torch.where(better.view(shape), grad, s["grad_max"])
            s["f_max"] = torch.where(better, loss, s["f_max"])
            s["x_prev"], s["xk"], s["grad"], s["loss"] = s["xk"], x_new, grad, loss
            if harvest(logits, x_new):
                return
            if it in ckpts:
                s = state
                stalled = s["n_incr"] < self.rho * (it - last_ckpt)
                no_gain = ~s["reduced"] & (s["f_ckpt"] >= s["f_max"])
                halve = stalled | no_gain
                s["eta"] = torch.where(halve, s["eta"] / 2, s["eta"])
                s["xk"] = torch.where(halve.view(shape), s["x_max"], s["xk"])
                s["grad"] = torch.where(halve.view(shape), s["grad_max"], s["grad"])
                s["reduced"], s["f_ckpt"] = halve, s["f_max"].clone()
                s["n_incr"] = torch.zeros_like(s["n_incr"])
                last_ckpt = it
        # inputs never broken keep their highest-loss point
        x_out[idx] = state["x_max"]


@ATTACKS.register("apgd-t")
@dataclass(frozen=True)
class APGDT(APGD):
    """APGD aimed in turn at each of the clean input's most likely wrong classes; any misclassification counts.

    Targeting the runner-up classes one after another finds adversarial examples that an untargeted loss misses
    when its gradient points the wrong way. Paper: Croce & Hein 2020 (the APGD-T component of AutoAttack).
    Threat model: white-box, Linf or L2, untargeted (the targets are chosen by the attack).

    Args:
        n_target_classes: how many of the top wrong classes to try (9 in AutoAttack), each with ``steps`` steps.
        loss: "dlr" (targeted DLR, the paper's choice), "ce" or "margin".
        Other settings as :class:`APGD`.

    Example::

        APGDT(ThreatModel(Norm.LINF, eps=0.1), n_target_classes=9).run(clf, x, y, generator=g)
    """

    name: ClassVar[str] = "apgd-t"
    supports_targeted: ClassVar[bool] = False
    loss: str = "dlr"
    n_target_classes: int = 9

    def _check_settings(self) -> list[str]:
        problems = super()._check_settings()
        check_positive_int("n_target_classes", self.n_target_classes, problems)
        return problems

    def _perturb(
        self,
        model: Any,
        x: Tensor,
        labels: Tensor,
        bounds: Bounds,
        generator: torch.Generator | None,
        state: AttackState,
    ) -> None:
        k = int(model.spec.num_classes)
        x_out, done, queries = state.x_adv, state.done, state.queries
        with torch.no_grad():
            order = model.predict_logits(x).to(x.device).argsort(1, descending=True)
        queries += 1
        done |= order[:, 0] != labels  # already misclassified: nothing to do
        for rank in range(1, min(self.n_target_classes, k - 1) + 1):
            targets = order[:, rank]
            for idx in state.pending(self.restarts):
                self._run_once(model, x, targets, labels, True, False, idx, bounds, generator, x_out, done, queries)
