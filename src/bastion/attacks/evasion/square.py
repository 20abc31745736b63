"""Square attack: score-based random search over square-shaped perturbation updates."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from bastion.attacks._losses import margin
from bastion.attacks._projection import project
from bastion.attacks.base import ATTACKS, AttackState, EvasionAttack, check_positive_float, check_positive_int
from bastion.types import Bounds, Norm

# (fraction of the query budget already spent, divisor of p_init): the paper's schedule for 10,000 queries, rescaled.
_SCHEDULE = ((0.001, 1), (0.005, 2), (0.02, 4), (0.05, 8), (0.1, 16), (0.2, 32), (0.4, 64), (0.6, 128), (0.8, 256))


def p_schedule(p_init: float, it: int, budget: int) -> float:
    """Fraction of the input changed at iteration ``it``: halved at fixed fractions of the query budget."""
    frac = it / budget
    divisor = 512
    for limit, div in _SCHEDULE:
        if frac <= limit:
            divisor = div
            break
    return p_init / divisor


def _as_images(x: Tensor) -> Tensor:
    """View inputs as (N, C, H, W); a flat feature vector becomes one row of pixels."""
    if x.dim() == 4:
        return x
    if x.dim() == 3:
        return x.unsqueeze(1)
    return x.reshape(x.shape[0], 1, 1, -1)


def _window_mask(h: int, w: int, top: Tensor, left: Tensor, size_h: int, size_w: int) -> Tensor:
    rows = torch.arange(h, device=top.device)[None, :]
    cols = torch.arange(w, device=top.device)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + size_h)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + size_w)
    return (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1)  # (B, 1, H, W)


def _randint(high: int, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    gdev = generator.device if generator is not None else device
    return torch.randint(0, max(1, high), (n,), generator=generator, device=gdev).to(device)


def _signs(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
) -> Tensor:
    gdev = generator.device if generator is not None else device
    bits = torch.randint(0, 2, shape, generator=generator, device=gdev).to(device=device, dtype=dtype)
    return bits.mul_(2).sub_(1)


def _l2_pattern(sh: int, sw: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """A unit-L2 (sh, sw) pattern: a positive bump in one half and a negative one in the other.

    This is the spirit of the paper's "meta-square" update (mass concentrated towards each half's centre, opposite
    signs in the two halves) in a closed form that also works for one-row windows of tabular inputs.
    """
    r = torch.arange(sh, device=device, dtype=dtype).view(-1, 1)
    c = torch.arange(sw, device=device, dtype=dtype).view(1, -1)
    if sw >= sh:  # split along the longer side
        half = max(1, sw // 2)
        centre_a, centre_b, along, across, centre_x = (half - 1) / 2, half + (sw - half - 1) / 2, c, r, (sh - 1) / 2
    else:
        half = max(1, sh // 2)
        centre_a, centre_b, along, across, centre_x = (half - 1) / 2, half + (sh - half - 1) / 2, r, c, (sw - 1) / 2
    dist_x = (across - centre_x).abs()
    bump_a = 1.0 / ((along - centre_a).abs().maximum(dist_x) + 1) ** 2
    bump_b = 1.0 / ((along - centre_b).abs().maximum(dist_x) + 1) ** 2
    pat = (
        torch.where(along < half, bump_a, -bump_b)
        if max(sh, sw) > 1
        else torch.ones(sh, sw, device=device, dtype=dtype)
    )
    return pat / pat.norm().clamp_min(1e-12)


@ATTACKS.register("square")
@dataclass(frozen=True)
class Square(EvasionAttack):
    """Random search that changes one randomly placed square of the perturbation per query and keeps improvements.

    It needs only the model's scores (no gradients), so it is immune to gradient masking and works against a model
    behind an API. Inputs already broken are not queried again; queries are counted per input.

    Paper: Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box adversarial
    attack via random search", ECCV 2020. Threat model: black-box (scores), Linf or L2, targeted or not.

    Args:
        threat: norm, eps, optional bounds, targeted.
        max_queries: query budget per input (the initialisation included).
        p_init: initial fraction of the input a square covers (halved on the paper's schedule).
        restarts: full reruns on the inputs still unbroken (each with its own budget).

    Shapes: x (N, C, H, W) images or (N, D) features within bounds; y (N,) int64.

    Example::

        Square(ThreatModel(Norm.LINF, eps=0.1), max_queries=1000).run(http_model, x, y, generator=g)
    """

    name: ClassVar[str] = "square"
    white_box: ClassVar[bool] = False
    max_queries: int = 1000
    p_init: float = 0.8
    restarts: int = 1

    def _check_settings(self) -> list[str]:
        problems: list[str] = []
        check_positive_int("max_queries", self.max_queries, problems, minimum=2)
        check_positive_int("restarts", self.restarts, problems)
        check_positive_float("p_init", self.p_init, problems)
        if not problems and self.p_init > 1:
            problems.append(f"p_init must be in (0, 1], got {self.p_init}")
        return problems

    def _margin(self, model: Any, xa: Tensor, lab: Tensor) -> Tensor:
        """Positive while the attack has not succeeded; the attack drives it below zero."""
        with torch.no_grad():
            logits = model.predict_logits(xa).to(xa.device)
        return -margin(logits, lab, targeted=self.threat.targeted)

    def _perturb(
        self,
        model: Any,
        x: Tensor,
        labels: Tensor,
        bounds: Bounds,
        generator: torch.Generator | None,
        state: AttackState,
    ) -> None:
        for idx in state.pending(self.restarts):
            self._search(model, x, labels, idx, bounds, generator, state.x_adv, state.done, state.queries)

    def _init(self, x0: Tensor, bounds: Bounds, generator: torch.Generator | None) -> Tensor:
        eps, lo, hi = self.threat.eps, bounds[0], bounds[1]
        img = _as_images(x0)
        b, c, _, w = img.shape
        stripes = _signs((b, c, 1, w), generator, x0.device, x0.dtype).expand_as(img)
        if self.threat.norm is Norm.LINF:
            delta = eps * stripes
        else:
            delta = stripes / stripes.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * eps
        x_init = (img + delta).reshape(x0.shape).clamp(lo, hi)
        return project(x_init, x0, eps, self.threat.norm, bounds)

    def _search(
        self,
        model: Any,
        x: Tensor,
        labels: Tensor,
        idx: Tensor,
        bounds: Bounds,
        generator: torch.Generator | None,
        x_out: Tensor,
        done: Tensor,
        queries: Tensor,
    ) -> None:
        eps, norm = self.threat.eps, self.threat.norm
        x0, lab = x[idx], labels[idx]
        x_best = self._init(x0, bounds, generator)
        m_best = self._margin(model, x_best, lab)
        queries[idx] += 1
        _, c, h, w = _as_images(x0).shape
        n_features = c * h * w
        for it in range(1, self.max_queries):
            broken = m_best < 0
            if bool(broken.any()):
                won = idx[broken]
                x_out[won] = x_best[broken]
                done[won] = True
                keep = ~broken
                idx, x0, lab, x_best, m_best = idx[keep], x0[keep], lab[keep], x_best[keep], m_best[keep]
            if idx.numel() == 0:
                return
            b = idx.numel()
            p = p_schedule(self.p_init, it, self.max_queries)
            s = max(1, round(math.sqrt(p * n_features / c)))
            sh, sw = max(1, min(s, h - 1 if h > 1 else 1)), max(1, min(s, w - 1 if w > 1 else 1))
            top = _randint(h - sh + 1, b, generator, x.device)
            left = _randint(w - sw + 1, b, generator, x.device)
            mask = _window_mask(h, w, top, left, sh, sw)
            img0, imgb = _as_images(x0), _as_images(x_best)
            delta = imgb - img0
            if norm is Norm.LINF:
                new = eps * _signs((b, c, 1, 1), generator, x.device, x.dtype)
                cand_delta = torch.where(mask, new, delta)
                unchanged = ((cand_delta - delta).abs() * mask).flatten(1).sum(1) < 1e-7
                cand_delta = torch.where(mask & unchanged.view(-1, 1, 1, 1), -new, cand_delta)
            else:
                cand_delta = self._l2_update(delta, mask, top, left, sh, sw, generator)
            if norm is Norm.LINF:  # every entry of cand_delta is +-eps or an earlier in-ball value: bounds suffice
                cand = (img0 + cand_delta).reshape(x0.shape).clamp_(bounds[0], bounds[1])
            else:
                cand = project((img0 + cand_delta).reshape(x0.shape), x0, eps, norm, bounds)
            m_new = self._margin(model, cand, lab)
            queries[idx] += 1
            better = m_new < m_best
            x_best = torch.where(better.view((-1,) + (1,) * (x0.dim() - 1)), cand, x_best)
            m_best = torch.where(better, m_new, m_best)
        broken = m_best < 0
        x_out[idx] = x_best
        done[idx[broken]] = True

    def _l2_update(
        self,
        delta: Tensor,
        mask1: Tensor,
        top1: Tensor,
        left1: Tensor,
        sh: int,
        sw: int,
        generator: torch.Generator | None,
    ) -> Tensor:
        """Move the L2 mass of two windows (plus any unused budget) into the first, shaped by a unit pattern."""
        b, c, h, w = delta.shape
        eps = self.threat.eps
        top2 = _randint(h - sh + 1, b, generator, delta.device)
        left2 = _randint(w - sw + 1, b, generator, delta.device)
        mask2 = _window_mask(h, w, top2, left2, sh, sw) & ~mask1
        sq = delta.pow(2)
        mass = (sq * (mask1 | mask2)).sum((2, 3))  # (B, C)
        spare = (eps**2 - sq.flatten(1).sum(1)).clamp_min(0).view(-1, 1) / c
        budget = (mass + spare).sqrt()
        pat = _l2_pattern(sh, sw, delta.device, delta.dtype)
        rr = (torch.arange(h, device=delta.device)[None, :, None] - top1.view(-1, 1, 1)).clamp(0, sh - 1)
        cc = (torch.arange(w, device=delta.device)[None, None, :] - left1.view(-1, 1, 1)).clamp(0, sw - 1)
        placed = (pat.flatten()[rr * sw + cc] * mask1.squeeze(1)).unsqueeze(1)  # (B, 1, H, W), zero outside
        signs = _signs((b, c, 1, 1), generator, delta.device, delta.dtype)
        new = signs * budget.view(b, c, 1, 1) * placed
        out = torch.where(mask1, new, delta)
        return torch.where(mask2, torch.zeros_like(out), out)
