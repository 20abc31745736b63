"""Pure functions that keep a perturbation inside the threat model: the eps-ball and the value bounds."""

from __future__ import annotations

import torch
from torch import Tensor

from bastion.types import Norm

_TINY = 1e-12


def per_sample_norm(delta: Tensor, norm: Norm) -> Tensor:
    """The norm of each perturbation in a batch, shape (N,)."""
    flat = delta.flatten(1)
    if norm is Norm.LINF:
        return flat.abs().amax(1)
    return flat.norm(p=2, dim=1)


def _expand(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def normalize_step(grad: Tensor, norm: Norm) -> Tensor:
    """The steepest-ascent direction of unit size: sign for Linf, grad / ||grad||_2 for L2."""
    if norm is Norm.LINF:
        return grad.sign()
    return grad / _expand(per_sample_norm(grad, Norm.L2).clamp_min(_TINY), grad)


def project(x_adv: Tensor, x: Tensor, eps: float, norm: Norm, bounds: tuple[float, float]) -> Tensor:
    """Project ``x_adv`` onto the eps-ball around ``x`` and then into ``bounds``.

    Clipping into the bounds after the ball keeps the result in both sets: for Linf the box intersection is exact,
    and for L2 clipping only shrinks each coordinate of the perturbation towards zero.
    """
    lo, hi = bounds
    if norm is Norm.LINF:
        return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp_(lo, hi)
    delta = x_adv - x
    n = per_sample_norm(delta, Norm.L2)
    factor = (eps / n.clamp_min(_TINY)).clamp(max=1.0)
    return (x + delta * _expand(factor, delta)).clamp_(lo, hi)


def random_start(
    x: Tensor, eps: float, norm: Norm, bounds: tuple[float, float], generator: torch.Generator | None
) -> Tensor:
    """A uniformly random point of the eps-ball around ``x`` (Linf: the cube; L2: the ball), within bounds."""
    device = generator.device if generator is not None else x.device
    if norm is Norm.LINF:
        delta = torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
        delta = delta.mul_(2 * eps).sub_(eps)
    else:
        d = x[0].numel()
        direction = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
        direction = direction / _expand(per_sample_norm(direction, Norm.L2).clamp_min(_TINY), direction)
        radius = torch.rand(x.shape[0], generator=generator, device=device, dtype=x.dtype).to(x.device)
        delta = direction * _expand(eps * radius.pow(1.0 / d), direction)
    lo, hi = bounds
    return (x + delta).clamp_(lo, hi)
