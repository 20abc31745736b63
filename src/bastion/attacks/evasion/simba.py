"""SimBA: score-based black-box attack that tries one basis direction per step."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from bastion._torch import as_images
from bastion.attacks._projection import project
from bastion.attacks.base import ATTACKS, AttackState, EvasionAttack, check_positive_float, check_positive_int
from bastion.types import Bounds, Norm

_BASES = ("pixel", "dct")


def dct_matrix(n: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Orthonormal DCT-II matrix (n, n): row u is the u-th cosine basis vector."""
    k = torch.arange(n, device=device, dtype=dtype)
    m = torch.cos(math.pi / n * (k[None, :] + 0.5) * k[:, None]) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m


@ATTACKS.register("simba")
@dataclass(frozen=True)
class SimBA(EvasionAttack):
    """Walks along random orthonormal directions: each step tries ``-step`` then ``+step`` along one unused
    direction and keeps whichever lowers the model's probability of the true class (raises the target's).

    One or two queries per step and per input, one input per query: the simplest score-based attack, and the one a
    stateful detector must catch when every query is a fresh near-duplicate. ``basis="pixel"`` changes one pixel a
    step (with Linf, each pixel moves by exactly eps); ``basis="dct"`` uses low-frequency 2D cosine patterns first,
    which the paper finds far more query-efficient on images.

    Paper: Guo, Gardner, You, Wilson & Weinberger, "Simple Black-box Adversarial Attacks", ICML 2019.
    Threat model: black-box (scores), Linf or L2, targeted or not.

    Args:
        threat: norm, eps, optional bounds, targeted.
        max_queries: query budget per input (the first evaluation included).
        basis: "pixel" or "dct".
        step: size of one step along a unit direction; default eps for Linf, 0.2 for L2 (the paper's DCT setting),
            never more than eps.
        low_frequency: with the DCT basis, the fraction of each image side whose frequencies are tried first.

    Shapes: x (N, C, H, W) images or (N, D) features within bounds; y (N,) int64.
    """

    name: ClassVar[str] = "simba"
    white_box: ClassVar[bool] = False
    max_queries: int = 1000
    basis: str = "dct"
    step: float | None = None
    low_frequency: float = 0.25

    def _check_settings(self) -> list[str]:
        problems: list[str] = []
        check_positive_int("max_queries", self.max_queries, problems, minimum=2)
        check_positive_float("step", self.step, problems, allow_none=True)
        check_positive_float("low_frequency", self.low_frequency, problems)
        if self.basis not in _BASES:
            problems.append(f"basis must be one of {', '.join(_BASES)}, got {self.basis!r}")
        if not problems and self.low_frequency > 1:
            problems.append(f"low_frequency must be in (0, 1], got {self.low_frequency}")
        return problems

    def _step(self) -> float:
        default = self.threat.eps if self.threat.norm is Norm.LINF else 0.2
        return min(self.step if self.step is not None else default, self.threat.eps)

    def _score(self, model: Any, xa: Tensor, lab: Tensor) -> tuple[Tensor, Tensor]:
        """(probability of ``lab``, whether the attack has succeeded) for each row; the attack lowers the first
        (raises it when targeted)."""
        with torch.no_grad():
            logits = model.predict_logits(xa).to(xa.device)
        p = torch.softmax(logits.float(), 1).gather(1, lab[:, None]).squeeze(1)
        pred = logits.argmax(1)
        won = pred == lab if self.threat.targeted else pred != lab
        return (-p if self.threat.targeted else p), won

    def _order(self, b: int, c: int, h: int, w: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        """Per input, the order in which the c*h*w directions are tried: low frequencies first for DCT."""
        gdev = generator.device if generator is not None else device
        keys = torch.rand((b, c, h, w), generator=generator, device=gdev).to(device)
        if self.basis == "dct":
            lh, lw = max(1, math.ceil(h * self.low_frequency)), max(1, math.ceil(w * self.low_frequency))
            high = torch.ones(c, h, w, device=device)
            high[:, :lh, :lw] = 0
            keys = keys + high
        return keys.flatten(1).argsort(1)

    def _directions(self, coord: Tensor, c: int, h: int, w: int, dh: Tensor, dw: Tensor) -> Tensor:
        """Unit directions (B, C, H, W) for flat coordinates ``coord`` (B,) in the chosen basis."""
        b = coord.shape[0]
        ch, rest = coord // (h * w), coord % (h * w)
        u, v = rest // w, rest % w
        out = torch.zeros(b, c, h, w, device=coord.device, dtype=dh.dtype)
        if self.basis == "pixel":
            out.view(b, -1)[torch.arange(b, device=coord.device), coord] = 1.0
        else:
            out[torch.arange(b, device=coord.device), ch] = dh[u][:, :, None] * dw[v][:, None, :]
        return out

    def _perturb(
        self,
        model: Any,
        x: Tensor,
        labels: Tensor,
        bounds: Bounds,
        generator: torch.Generator | None,
        state: AttackState,
    ) -> None:
        idx = torch.arange(x.shape[0], device=x.device)
        x0, lab = x, labels
        _, c, h, w = as_images(x0).shape
        dims = c * h * w
        dh, dw = dct_matrix(h, x.device, x.dtype), dct_matrix(w, x.device, x.dtype)
        order = self._order(x0.shape[0], c, h, w, generator, x.device)
        step, norm, eps = self._step(), self.threat.norm, self.threat.eps
        x_best = x0.clone()
        p_best, won = self._score(model, x_best, lab)
        state.queries[idx] += 1
        it = 0
        while True:
            if bool(won.any()):
                state.x_adv[idx[won]] = x_best[won]
                state.done[idx[won]] = True
                keep = ~won
                idx, x0, lab, order = idx[keep], x0[keep], lab[keep], order[keep]
                x_best, p_best, won = x_best[keep], p_best[keep], won[keep]
            left = self.max_queries - state.queries[idx]
            if idx.numel() == 0 or it >= dims or not bool((left >= 1).any()):
                break
            active = left >= 1  # inputs with budget for at least the first try
            d = self._directions(order[:, it], c, h, w, dh, dw).reshape(x0.shape) * step
            it += 1
            ai = active.nonzero().squeeze(1)
            cand = project((x_best[ai] - d[ai]).clamp(bounds[0], bounds[1]), x0[ai], eps, norm, bounds)
            p_neg, w_neg = self._score(model, cand, lab[ai])
            state.queries[idx[ai]] += 1
            better = p_neg < p_best[ai]
            x_best[ai[better]], p_best[ai[better]] = cand[better], p_neg[better]
            won[ai[better]] = w_neg[better]
            second = ai[~better & (state.queries[idx[ai]] < self.max_queries)]
            if second.numel():
                cand = project((x_best[second] + d[second]).clamp(bounds[0], bounds[1]), x0[second], eps, norm, bounds)
                p_pos, w_pos = self._score(model, cand, lab[second])
                state.queries[idx[second]] += 1
                better = p_pos < p_best[second]
                x_best[second[better]], p_best[second[better]] = cand[better], p_pos[better]
                won[second[better]] = w_pos[better]
        state.x_adv[idx] = x_best
