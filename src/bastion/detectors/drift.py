"""Has the input distribution moved? Two-sample tests of current inputs against reference ones.

- :func:`ks_test`: a Kolmogorov-Smirnov test per feature, every feature at once in torch, with the
  Benjamini-Hochberg procedure over features so the share of falsely named features stays below ``fdr``
  (Benjamini & Hochberg 1995). Says *which* features moved.
- :func:`mmd_test`: the kernel maximum mean discrepancy (Gretton et al., JMLR 2012) with a Gaussian kernel at the
  median-distance bandwidth and a permutation p-value, all permutations as one batched matrix product. Sees joint
  changes no single feature shows.

Both take (N, *shape) tensors and compare them flattened. :class:`SlidingWindow` runs them over a stream.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import kolmogorov
from scipy.stats import kstwo
from torch import Tensor

from bastion._validate import raise_if, tensor_problems
from bastion.errors import InputValidationError


@dataclass(frozen=True)
class KSResult:
    """Per feature: ``statistic`` and ``p_value`` (D,); ``drifted`` the features rejected at false-discovery rate
    ``fdr``; ``drift`` whether any was."""

    statistic: Tensor
    p_value: Tensor
    drifted: Tensor
    fdr: float

    @property
    def drift(self) -> bool:
        return bool(self.drifted.any())

    def top(self, k: int = 5) -> list[tuple[int, float, float]]:
        """The ``k`` most changed features: (index, KS statistic, p-value)."""
        idx = self.statistic.argsort(descending=True)[:k]
        return [(int(i), float(self.statistic[i]), float(self.p_value[i])) for i in idx]


@dataclass(frozen=True)
class MMDResult:
    """``mmd2``: the (biased) squared MMD; ``p_value``: permutation p-value with ``permutations`` draws;
    ``bandwidth``: the Gaussian kernel's width."""

    mmd2: float
    p_value: float
    permutations: int
    bandwidth: float

    def drift(self, alpha: float) -> bool:
        return self.p_value <= alpha


def _pair(reference: Tensor, current: Tensor) -> tuple[Tensor, Tensor]:
    for name, t in (("reference", reference), ("current", current)):
        raise_if(tensor_problems(t, name=name), "drift test input")
    ref, cur = reference.flatten(1).double(), current.flatten(1).double()
    if ref.shape[1] != cur.shape[1]:
        raise InputValidationError(
            f"reference has {ref.shape[1]} features per input and current {cur.shape[1]}: compare inputs of one "
            "kind (the same model's inputs)"
        )
    if ref.shape[0] < 2 or cur.shape[0] < 2:
        raise InputValidationError(
            f"each sample needs at least 2 inputs (reference {ref.shape[0]}, current {cur.shape[0]})"
        )
    return ref, cur


def benjamini_hochberg(p: Tensor, fdr: float) -> Tensor:
    """(D,) bool: the hypotheses rejected at false-discovery rate ``fdr``."""
    if not 0 < fdr < 1:
        raise InputValidationError(f"fdr must be in (0, 1), got {fdr}")
    m = p.numel()
    order = p.argsort()
    below = p[order] <= fdr * torch.arange(1, m + 1, dtype=p.dtype) / m
    out = torch.zeros(m, dtype=torch.bool)
    if bool(below.any()):
        last = int(below.nonzero().max())
        out[order[: last + 1]] = True
    return out


def ks_test(reference: Tensor, current: Tensor, *, fdr: float = 0.01) -> KSResult:
    """Two-sample KS per feature (asymptotic p-values from the Kolmogorov distribution at the effective size
    n*m/(n+m), as scipy's ``ks_2samp`` does in its asymptotic mode), with Benjamini-Hochberg over features."""
    ref, cur = _pair(reference, current)
    n, m = ref.shape[0], cur.shape[0]
    # one sort of the pooled sample per feature; the ECDF difference is the running sum of +1/n (reference) and
    # -1/m (current), read where the value changes (ties, common in pixel data, count together)
    vals, order = torch.cat([ref, cur]).float().T.contiguous().sort(1)
    w = torch.cat([torch.full((n,), 1.0 / n, dtype=torch.float64), torch.full((m,), -1.0 / m, dtype=torch.float64)])
    diff = w[order].cumsum(1)
    last = torch.ones_like(vals, dtype=torch.bool)
    last[:, :-1] = vals[:, 1:] != vals[:, :-1]
    stat = (diff.abs() * last).amax(1)
    en = max(1, round(n * m / (n + m)))
    # the exact Kolmogorov tail (scipy's kstwo) is slow; the asymptotic one is within ~0.02 of it, so it is used
    # for features that are nowhere near significance and the exact one for the rest (and the top 20, reported)
    d = stat.numpy()
    p = kolmogorov(math.sqrt(en) * d)
    exact = (p <= max(10 * fdr, 0.05)) | (d >= np.sort(d)[-min(20, d.size)])
    if exact.any():
        p[exact] = kstwo.sf(d[exact], en)
    pv = torch.from_numpy(p).double().clamp(0, 1)
    return KSResult(stat.float(), pv, benjamini_hochberg(pv, fdr), fdr)


def mmd_test(
    reference: Tensor,
    current: Tensor,
    *,
    permutations: int = 500,
    bandwidth: float | None = None,
    generator: torch.Generator | None = None,
    max_inputs: int = 2000,
) -> MMDResult:
    """Gaussian-kernel MMD with a permutation p-value ``(1 + #{perm >= observed}) / (1 + permutations)``.

    Each sample is subsampled to ``max_inputs`` (the kernel matrix is quadratic in their sum). ``bandwidth``
    defaults to the median pairwise distance of the pooled sample.
    """
    if isinstance(permutations, bool) or not isinstance(permutations, int) or permutations < 1:
        raise InputValidationError(f"permutations must be an int >= 1, got {permutations!r}")
    ref, cur = _pair(reference, current)
    g = generator or torch.Generator().manual_seed(0)
    if ref.shape[0] > max_inputs:
        ref = ref[torch.randperm(ref.shape[0], generator=g)[:max_inputs]]
    if cur.shape[0] > max_inputs:
        cur = cur[torch.randperm(cur.shape[0], generator=g)[:max_inputs]]
    n, m = ref.shape[0], cur.shape[0]
    z = torch.cat([ref, cur]).float()
    sq = torch.cdist(z, z).pow(2)
    if bandwidth is None:
        off = sq[~torch.eye(n + m, dtype=torch.bool)]
        med = float(off.median())
        bandwidth = math.sqrt(med) if med > 0 else 1.0
    elif not bandwidth > 0:
        raise InputValidationError(f"bandwidth must be > 0, got {bandwidth}")
    k = torch.exp(-sq / (2 * bandwidth**2))
    # sample weights: +1/n on the reference, -1/m on the current; MMD^2 (biased) = w^T K w
    w = torch.cat([torch.full((n,), 1.0 / n), torch.full((m,), -1.0 / m)])
    observed = float(w @ k @ w)
    perms = torch.argsort(torch.rand(permutations, n + m, generator=g), dim=1)
    wp = w[perms]  # (P, N): each row the same weights over a shuffled pooled sample
    null = ((wp @ k) * wp).sum(1)
    p = (1 + int((null >= observed - 1e-12).sum())) / (1 + permutations)
    return MMDResult(observed, p, permutations, float(bandwidth))


class SlidingWindow:
    """The last ``size`` inputs of a stream, tested against a fixed reference every ``size`` new inputs
    (non-overlapping windows, so successive tests are independent)."""

    def __init__(self, reference: Tensor, size: int = 500) -> None:
        if size < 20:
            raise InputValidationError(f"a drift window needs at least 20 inputs, got {size}")
        raise_if(tensor_problems(reference, name="reference"), "drift reference")
        self.reference = reference.flatten(1).float()
        self.size = size
        self._window: deque[Tensor] = deque(maxlen=size)
        self._since = 0

    def add(self, x: Tensor) -> Tensor | None:
        """Add (N, ...) inputs; returns the current window when a full new window has arrived (then starts over)."""
        for row in x.flatten(1).float():
            self._window.append(row)
        self._since += int(x.shape[0])
        if self._since >= self.size and len(self._window) == self.size:
            self._since = 0
            out = torch.stack(list(self._window))
            self._window.clear()
            return out
        return None
