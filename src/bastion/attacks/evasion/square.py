"""Square attack: score-based random search over square-shaped perturbation updates."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from bastion._torch import as_images
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


def _rect_bumps(rows: int, cols: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Concentric rectangles around the centre, each adding 1/(k+1)^2: mass peaks in the middle and fades outwards.

    The value at Chebyshev distance d from the centre is the sum of 1/(k+1)^2 over the rectangles k >= d that
    cover it — the paper's "pseudo-Gaussian" building block, in closed form.
    """
    rings = max(rows // 2, cols // 2) + 1
    weights = 1.0 / torch.arange(1, rings + 1, device=device, dtype=dtype) ** 2
    suffix = weights.flip(0).cumsum(0).flip(0)  # suffix[d] = sum_{k >= d} weights[k]
    r = (torch.arange(rows, device=device) - rows // 2).abs().view(-1, 1)
    c = (torch.arange(cols, device=device) - cols // 2).abs().view(1, -1)
    return suffix[torch.maximum(r, c)]


def meta_square(sh: int, sw: int, transpose: bool, device: torch.device, dtype: torch.dtype) -> Tensor:
    """The paper's L2 update pattern, unit L2 norm: two pseudo-Gaussian halves of opposite sign.

    The window is split across its rows (or, with ``transpose``, its columns, as the paper picks at random); a
    window one pixel high (tabular rows) is split across its columns.
    """
    split_rows = (sh > 1 and not transpose) or sw == 1
    if split_rows:
        top = sh // 2 if sh > 1 else 1
        pat = (
            torch.cat([_rect_bumps(top, sw, device, dtype), -_rect_bumps(sh - top, sw, device, dtype)], 0)
            if sh > 1
            else torch.ones(sh, sw, device=device, dtype=dtype)
        )
    else:
        left = sw // 2
        pat = torch.cat([_rect_bumps(sh, left, device, dtype), -_rect_bumps(sh, sw - left, device, dtype)], 1)
    return pat / pat.norm().clamp_min(1e-12)


def _coin(generator: torch.Generator | None, device: torch.device) -> bool:
    return bool(_randint(2, 1, generator, device).item())


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
        """Linf: vertical stripes of +-eps. L2: a grid of meta-squares with random signs, scaled to norm eps."""
        eps, lo, hi = self.threat.eps, bounds[0], bounds[1]
        img = as_images(x0)
        b, c, _, w = img.shape
        if self.threat.norm is Norm.LINF:
            delta = eps * _signs((b, c, 1, w), generator, x0.device, x0.dtype).expand_as(img)
        else:
            delta = self._l2_grid(img, generator)
            delta = delta / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1) * eps
        x_init = (img + delta).reshape(x0.shape).clamp(lo, hi)
        return project(x_init, x0, eps, self.threat.norm, bounds)

    @staticmethod
    def _l2_grid(img: Tensor, generator: torch.Generator | None) -> Tensor:
        """The paper's L2 start: a 5x5 grid of meta-squares (side h // 5), each with its own random sign.

        Inputs too small for the grid (tabular rows, tiny images) start from stripes of random sign instead.
        """
        b, c, h, w = img.shape
        side = min(h, w) // 5
        if side < 1:
            return _signs((b, c, 1, w), generator, img.device, img.dtype).expand_as(img).clone()
        top, left = (h - 5 * side) // 2, (w - 5 * side) // 2
        cells_h, cells_w = (h - top) // side, (w - left) // side
        pats = torch.stack([meta_square(side, side, t, img.device, img.dtype) for t in (False, True)])
        pick = _randint(2, cells_h * cells_w, generator, img.device).view(cells_h, cells_w)
        tiles = pats[pick]  # (cells_h, cells_w, side, side)
        grid = tiles.permute(0, 2, 1, 3).reshape(cells_h * side, cells_w * side)
        signs = _signs((b, c, cells_h, cells_w), generator, img.device, img.dtype)
        signs = signs.repeat_interleave(side, 2).repeat_interleave(side, 3)
        delta = torch.zeros_like(img)
        delta[:, :, top : top + cells_h * side, left : left + cells_w * side] = grid * signs
        return delta

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
        _, c, h, w = as_images(x0).shape
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
            if norm is Norm.L2 and min(h, w) >= 3:  # the paper's L2 windows: at least 3 wide, odd (a centre pixel)
                s = max(s, 3) + (1 - max(s, 3) % 2)
            sh, sw = max(1, min(s, h - 1 if h > 1 else 1)), max(1, min(s, w - 1 if w > 1 else 1))
            top = _randint(h - sh + 1, b, generator, x.device)
            left = _randint(w - sw + 1, b, generator, x.device)
            mask = _window_mask(h, w, top, left, sh, sw)
            img0, imgb = as_images(x0), as_images(x_best)
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
            else:  # the paper spends the whole budget: rescale to norm eps, then bounds and projection
                scale = eps / cand_delta.flatten(1).norm(dim=1).clamp_min(1e-12)
                cand = project((img0 + cand_delta * scale.view(-1, 1, 1, 1)).reshape(x0.shape), x0, eps, norm, bounds)
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
        """The paper's L2 step: move the mass of two windows (plus any unused budget) into the first.

        The first window gets its old direction plus a meta-square of random sign, rescaled per channel so the
        whole perturbation keeps its L2 norm; the second window is cleared. The caller rescales to norm eps.
        """
        b, c, h, w = delta.shape
        eps = self.threat.eps
        top2 = _randint(h - sh + 1, b, generator, delta.device)
        left2 = _randint(w - sw + 1, b, generator, delta.device)
        mask2 = _window_mask(h, w, top2, left2, sh, sw) & ~mask1
        sq = delta.pow(2)
        old = delta * mask1
        old_norm = old.pow(2).sum((2, 3), keepdim=True).sqrt()
        mass = (sq * (mask1 | mask2)).sum((2, 3), keepdim=True)  # (B, C, 1, 1)
        spare = (eps**2 - sq.flatten(1).sum(1)).clamp_min(0).view(-1, 1, 1, 1) / c
        pat = meta_square(sh, sw, _coin(generator, delta.device), delta.device, delta.dtype)
        rr = (torch.arange(h, device=delta.device)[None, :, None] - top1.view(-1, 1, 1)).clamp(0, sh - 1)
        cc = (torch.arange(w, device=delta.device)[None, None, :] - left1.view(-1, 1, 1)).clamp(0, sw - 1)
        placed = (pat.flatten()[rr * sw + cc] * mask1.squeeze(1)).unsqueeze(1)  # (B, 1, H, W), zero outside
        signs = _signs((b, c, 1, 1), generator, delta.device, delta.dtype)
        new = signs * placed + old / (old_norm + 1e-10)
        new = new / new.pow(2).sum((2, 3), keepdim=True).sqrt().clamp_min(1e-12) * (mass + spare).sqrt()
        out = torch.where(mask1, new, delta)
        return torch.where(mask2, torch.zeros_like(out), out)
