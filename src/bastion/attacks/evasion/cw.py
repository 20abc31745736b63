"""Carlini-Wagner L2: the smallest L2 perturbation that changes the decision, found by optimisation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from bastion.attacks.base import ATTACKS, AttackState, EvasionAttack, check_positive_float, check_positive_int
from bastion.types import Bounds, Norm


@ATTACKS.register("cw")
@dataclass(frozen=True)
class CarliniWagnerL2(EvasionAttack):
    """Minimises ``||x' - x||_2^2 + c * max(margin + kappa, 0)`` in tanh space, binary-searching ``c`` per input.

    The tanh change of variables keeps every iterate inside the value bounds without clipping; Adam does the
    descent; the constant ``c`` is searched per input (doubled tenfold until a success, then bisected) so each
    input gets the smallest perturbation that works. Optimisation of a binary step stops early when the loss has
    not improved by 0.01% over a tenth of the steps.

    Paper: Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P 2017.
    Threat model: white-box, L2, targeted or not; ``eps`` caps the L2 norm (a success beyond it is not kept).

    Args:
        steps: Adam steps per binary-search step.
        binary_search_steps: rounds of the search over ``c``.
        initial_const: the first ``c``.
        lr: Adam's learning rate in tanh space. 0.1 rather than the paper's 0.01: with a budget of ~100 steps per
            round, 0.01 cannot move inputs that sit at the bounds (where tanh saturates), which on digits left
            10% of inputs unbroken and the rest with larger norms (measured: success 0.90 -> 1.00, mean L2
            0.70 -> 0.55 on 200 digits test inputs, 4 rounds of 100 steps).
        confidence: the margin ``kappa`` the adversarial class must win by.
        abort_early: stop a round once the loss stalls.
        refine: step-size factor for inputs already broken in an earlier round (their later rounds only shrink
            the perturbation, which wants small steps).

    Example::

        CarliniWagnerL2(ThreatModel(Norm.L2, eps=3.0), steps=100, binary_search_steps=5).run(clf, x, y)
    """

    name: ClassVar[str] = "cw"
    norms: ClassVar[frozenset[Norm]] = frozenset({Norm.L2})
    steps: int = 100
    binary_search_steps: int = 5
    initial_const: float = 0.1
    lr: float = 0.1
    confidence: float = 0.0
    abort_early: bool = True
    refine: float = 0.1

    def _check_settings(self) -> list[str]:
        problems: list[str] = []
        check_positive_int("steps", self.steps, problems)
        check_positive_int("binary_search_steps", self.binary_search_steps, problems)
        check_positive_float("initial_const", self.initial_const, problems)
        check_positive_float("lr", self.lr, problems)
        check_positive_float("refine", self.refine, problems)
        if (
            isinstance(self.confidence, bool)
            or not isinstance(self.confidence, (int, float))
            or not (math.isfinite(self.confidence) and self.confidence >= 0)
        ):
            problems.append(f"confidence must be a finite number >= 0, got {self.confidence!r}")
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
        lo, hi = bounds
        n = x.shape[0]
        dev, targeted, kappa = x.device, self.threat.targeted, float(self.confidence)
        scale = (hi - lo) / 2
        w0 = torch.atanh(((x - lo) / scale - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        const = torch.full((n,), self.initial_const, device=dev)
        lower = torch.zeros(n, device=dev)
        upper = torch.full((n,), math.inf, device=dev)
        best_l2 = torch.full((n,), math.inf, device=dev)
        best, queries = state.x_adv, state.queries  # filled as the search improves (kept if interrupted)
        onehot = torch.nn.functional.one_hot(labels, int(model.spec.num_classes)).bool()
        check_every = max(1, self.steps // 10)
        view = (-1,) + (1,) * (x.dim() - 1)
        for _ in range(self.binary_search_steps):
            broken = (best_l2 < math.inf).view(view)
            # inputs broken before restart from their best adversarial point and refine it; the others from x
            w_best = torch.atanh(((best - lo) / scale - 1).clamp(-1 + 1e-6, 1 - 1e-6))
            w = torch.where(broken, w_best, w0).requires_grad_(True)
            # Adam by hand, so that each input has its own step size: coarse until it has been broken once,
            # then fine, to shrink its perturbation (one shared step size is either too coarse or too timid)
            m = torch.zeros_like(w0)
            v = torch.zeros_like(w0)
            step_size = torch.where(best_l2 < math.inf, self.lr * self.refine, self.lr).view(view)
            won_round = torch.zeros(n, dtype=torch.bool, device=dev)
            previous = math.inf
            for it in range(self.steps):
                xa = (torch.tanh(w) + 1) * scale + lo
                logits = model.logits(xa)
                label_logit = logits.masked_select(onehot)
                other = logits.masked_fill(onehot, -math.inf).amax(1)
                gap = (other - label_logit) if targeted else (label_logit - other)
                l2sq = (xa - x).flatten(1).pow(2).sum(1)
                loss = l2sq + const * (gap + kappa).clamp_min(0)
                total = loss.sum()
                (grad,) = torch.autograd.grad(total, w)
                queries += 1
                with torch.no_grad():
                    m.mul_(0.9).add_(grad, alpha=0.1)
                    v.mul_(0.999).addcmul_(grad, grad, value=0.001)
                    m_hat = m / (1 - 0.9 ** (it + 1))
                    v_hat = v / (1 - 0.999 ** (it + 1))
                    w -= step_size * m_hat / (v_hat.sqrt() + 1e-8)
                with torch.no_grad():
                    hit = gap.detach() + kappa <= 0 if kappa > 0 else gap.detach() < 0
                    l2 = l2sq.detach().sqrt()
                    improve = hit & (l2 < best_l2)
                    best_l2 = torch.where(improve, l2, best_l2)
                    best[improve] = xa.detach()[improve]
                    state.done |= improve & (l2 <= self.threat.eps)
                    won_round |= hit
                if self.abort_early and it % check_every == 0:
                    value = float(total.detach())
                    if value > previous * 0.9999:
                        break
                    previous = value
            upper = torch.where(won_round, torch.minimum(upper, const), upper)
            lower = torch.where(won_round, lower, torch.maximum(lower, const))
            const = torch.where(upper < math.inf, (lower + upper) / 2, const * 10)
        beyond = best_l2 > self.threat.eps
        best[beyond] = x[beyond]
        state.details["min_l2_found"] = best_l2.cpu()
