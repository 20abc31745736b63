"""HopSkipJump: a decision-based attack that needs only the model's top-1 labels."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from bastion.attacks._projection import per_sample_norm
from bastion.attacks.base import ATTACKS, AttackState, EvasionAttack, check_positive_float, check_positive_int
from bastion.models.base import predict_labels
from bastion.types import Bounds, Norm


def _view(v: Tensor, like: Tensor) -> Tensor:
    return v.view((-1,) + (1,) * (like.dim() - 1))


@ATTACKS.register("hopskipjump")
@dataclass(frozen=True)
class HopSkipJump(EvasionAttack):
    """Walks along the decision boundary towards the input, estimating the boundary's normal from labels alone.

    Each iteration estimates the gradient direction at a boundary point by Monte-Carlo sampling of the label
    (adversarial or not) around it, takes a geometrically shrinking step along it, and bisects back to the
    boundary. All inputs of a batch move in lockstep, so every stage is one batched query.

    Paper: Chen, Jordan & Wainwright, "HopSkipJumpAttack: A Query-Efficient Decision-Based Attack", IEEE S&P 2020.
    Threat model: black-box (labels only), L2 or Linf, targeted or not. ``eps`` is the budget: an input counts as
    broken when its boundary point lies within eps; with ``early_stop`` it is not queried further once it does.

    Args:
        max_queries: query budget per input; an input is retired before an iteration that could exceed it.
        init_evals / max_evals: Monte-Carlo samples per gradient estimate, growing as init_evals * sqrt(t).
        init_tries: random points tried to find an initial adversarial input.
        gamma: sets the bisection tolerance and the probe radius (1.0 in the paper).
        batch_size: most inputs sent to the model in one call.

    Example::

        HopSkipJump(ThreatModel(Norm.LINF, eps=0.1), max_queries=5000).run(label_only_model, x, y, generator=g)
    """

    name: ClassVar[str] = "hopskipjump"
    white_box: ClassVar[bool] = False
    max_queries: int = 5000
    init_evals: int = 100
    max_evals: int = 1000
    init_tries: int = 100
    gamma: float = 1.0
    early_stop: bool = True
    batch_size: int = 1024

    def _check_settings(self) -> list[str]:
        problems: list[str] = []
        check_positive_int("max_queries", self.max_queries, problems, minimum=10)
        check_positive_int("init_evals", self.init_evals, problems)
        check_positive_int("max_evals", self.max_evals, problems)
        check_positive_int("init_tries", self.init_tries, problems)
        check_positive_int("batch_size", self.batch_size, problems)
        check_positive_float("gamma", self.gamma, problems)
        return problems

    # --- queries -------------------------------------------------------------------------------------------------
    def _is_adv(self, model: Any, xs: Tensor, lab: Tensor) -> Tensor:
        """One label query per row of ``xs``; True where the row is adversarial for its label."""
        with torch.no_grad():
            pred = predict_labels(model, xs, batch_size=self.batch_size).to(xs.device)
        return pred == lab if self.threat.targeted else pred != lab

    def _dist(self, a: Tensor, b: Tensor) -> Tensor:
        return per_sample_norm(a - b, self.threat.norm)

    def _blend(self, x: Tensor, x_adv: Tensor, t: Tensor) -> Tensor:
        """Points between x (t=0) and x_adv: linear for L2, a shrinking Linf box for Linf (t is then a radius)."""
        if self.threat.norm is Norm.L2:
            return x + _view(t, x) * (x_adv - x)
        r = _view(t, x)
        return torch.minimum(torch.maximum(x_adv, x - r), x + r)

    # --- stages --------------------------------------------------------------------------------------------------
    def _bisect(
        self, model: Any, x: Tensor, x_adv: Tensor, lab: Tensor, theta: float, queries: Tensor, rows: Tensor
    ) -> Tensor:
        """Move each adversarial point to the boundary along the segment (L2) or box (Linf) towards x."""
        if self.threat.norm is Norm.L2:
            high = torch.ones(x.shape[0], device=x.device, dtype=x.dtype)
            tol = torch.full_like(high, theta)
        else:
            high = self._dist(x_adv, x)
            tol = torch.minimum(high * theta, torch.full_like(high, theta))
        low = torch.zeros_like(high)
        for _ in range(64):
            todo = (high - low) > tol
            if not bool(todo.any()):
                break
            mid = (high + low) / 2
            adv = self._is_adv(model, self._blend(x[todo], x_adv[todo], mid[todo]), lab[todo])
            queries[rows[todo]] += 1
            m = mid[todo]
            high[todo] = torch.where(adv, m, high[todo])
            low[todo] = torch.where(adv, low[todo], m)
        return self._blend(x, x_adv, high)

    def _initial(
        self,
        model: Any,
        x: Tensor,
        lab: Tensor,
        bounds: Bounds,
        generator: torch.Generator | None,
        queries: Tensor,
        rows: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Uniform noise until adversarial, per input; returns the points and which inputs got one."""
        lo, hi = bounds
        found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        start = x.clone()
        gdev = generator.device if generator is not None else x.device
        for _ in range(self.init_tries):
            todo = (~found).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            noise = torch.rand((todo.numel(), *x.shape[1:]), generator=generator, device=gdev, dtype=x.dtype)
            noise = noise.to(x.device) * (hi - lo) + lo
            adv = self._is_adv(model, noise, lab[todo])
            queries[rows[todo]] += 1
            won = todo[adv]
            start[won] = noise[adv]
            found[won] = True
        return start, found

    def _perturb(
        self,
        model: Any,
        x: Tensor,
        labels: Tensor,
        bounds: Bounds,
        generator: torch.Generator | None,
        state: AttackState,
    ) -> None:
        d = x[0].numel()
        lo, hi = bounds
        eps, norm = self.threat.eps, self.threat.norm
        queries, x_out = state.queries, state.x_adv
        theta = self.gamma / (d * math.sqrt(d)) if norm is Norm.L2 else self.gamma / (d * d)
        gdev = generator.device if generator is not None else x.device

        # inputs the model already gets "wrong" for this threat need no search
        already = self._is_adv(model, x, labels)
        queries += 1
        state.done |= already
        # only inputs not already adversarial need a starting point (and pay its queries)
        todo = (~already).nonzero().squeeze(1)
        start, found = self._initial(model, x[todo], labels[todo], bounds, generator, queries, todo)
        active, start = todo[found], start[found]
        if active.numel() == 0:
            return
        xa = self._bisect(model, x[active], start, labels[active], theta, queries, active)
        dist = self._dist(xa, x[active])
        best = x_out  # boundary points are written here as they are retired
        t = 0
        while active.numel():
            t += 1
            if self.early_stop:
                close = dist <= eps
                best[active[close]] = xa[close]
                state.done[active[close]] = True
                keep = ~close
                active, xa, dist = active[keep], xa[keep], dist[keep]
                if active.numel() == 0:
                    break
            n_evals = min(int(self.init_evals * math.sqrt(t)), self.max_evals)
            # retire inputs whose remaining budget cannot pay for a full iteration
            need = n_evals + 25 + 64
            fits = (self.max_queries - queries[active]) >= need
            if not bool(fits.all()):
                best[active[~fits]] = xa[~fits]
                active, xa, dist = active[fits], xa[fits], dist[fits]
                if active.numel() == 0:
                    break
            x0, lab = x[active], labels[active]
            b = active.numel()
            delta = (0.1 * (hi - lo)) if t == 1 else ((math.sqrt(d) * theta if norm is Norm.L2 else d * theta) * dist)
            delta_t = delta if isinstance(delta, Tensor) else torch.full((b,), delta, device=x.device, dtype=x.dtype)
            # Monte-Carlo estimate of the boundary normal at each xa
            shape = (b, n_evals, *x.shape[1:])
            if norm is Norm.L2:
                u = torch.randn(shape, generator=generator, device=gdev, dtype=x.dtype).to(x.device)
            else:
                u = torch.rand(shape, generator=generator, device=gdev, dtype=x.dtype).to(x.device) * 2 - 1
            u = u / u.flatten(2).norm(dim=2).clamp_min(1e-12).view(b, n_evals, *([1] * (x.dim() - 1)))
            probes = (xa.unsqueeze(1) + delta_t.view(b, 1, *([1] * (x.dim() - 1))) * u).clamp(lo, hi)
            u = (probes - xa.unsqueeze(1)) / delta_t.view(b, 1, *([1] * (x.dim() - 1)))
            lab_rep = lab.repeat_interleave(n_evals)
            phi = self._is_adv(model, probes.reshape(b * n_evals, *x.shape[1:]), lab_rep).view(b, n_evals)
            queries[active] += n_evals
            f = phi.to(x.dtype) * 2 - 1
            mean = f.mean(1, keepdim=True)
            mixed = (mean.abs() < 1).view(b, 1)
            f = torch.where(mixed, f - mean, f)
            grad = (f.view(b, n_evals, *([1] * (x.dim() - 1))) * u).mean(1)
            if norm is Norm.L2:
                step_dir = grad / _view(grad.flatten(1).norm(dim=1).clamp_min(1e-12), grad)
            else:
                step_dir = grad.sign()
            # geometric step: halve until the stepped point is still adversarial
            eta = dist / math.sqrt(t)
            cand = (xa + _view(eta, xa) * step_dir).clamp(lo, hi)
            for _ in range(25):
                ok = self._is_adv(model, cand, lab)
                queries[active] += 1
                if bool(ok.all()):
                    break
                eta = torch.where(ok, eta, eta / 2)
                cand = torch.where(_view(ok, cand), cand, (xa + _view(eta, xa) * step_dir).clamp(lo, hi))
            else:
                ok = self._is_adv(model, cand, lab)
                queries[active] += 1
            cand = torch.where(_view(ok, cand), cand, xa)  # a point that never became adversarial keeps xa
            xa = self._bisect(model, x0, cand, lab, theta, queries, active)
            dist = self._dist(xa, x0)
        # keep boundary points within eps; inputs whose point lies beyond it stay unperturbed (not broken)
        outside = self._dist(best, x) > self.threat.eps
        best[outside] = x[outside]
        state.done |= ~outside & ~(best == x).flatten(1).all(1)
