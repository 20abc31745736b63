"""Named metrics with confidence intervals: what an assessment measures and a threshold may gate on.

Every rate is an :class:`Estimate` with a Wilson score interval (Wilson 1927; recommended over the normal
approximation for small n and rates near 0 or 1 by Brown, Cai & DasGupta, "Interval Estimation for a Binomial
Proportion", Statistical Science 2001), so a gate can ask for the interval's lower bound, not only the point value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from scipy.stats import norm as _normal

Kind = Literal["fraction", "value"]
Better = Literal["higher", "lower"]


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes in ``n`` trials; ``(0, 1)`` when ``n`` is 0."""
    if n <= 0:
        return 0.0, 1.0
    z = float(_normal.ppf(0.5 + confidence / 2))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if k == 0 else max(0.0, centre - half)  # exact at the ends: rounding must not exclude p itself
    high = 1.0 if k == n else min(1.0, centre + half)
    return min(low, p), max(high, p)


@dataclass(frozen=True)
class Estimate:
    """A measured value; for a rate also the counts ``k`` of ``n`` and its confidence interval ``[low, high]``."""

    value: float
    low: float
    high: float
    k: int | None = None
    n: int | None = None

    @classmethod
    def rate(cls, k: int, n: int, confidence: float = 0.95) -> Estimate:
        lo, hi = wilson_interval(k, n, confidence)
        return cls(k / n if n else 0.0, lo, hi, k, n)

    @classmethod
    def exact(cls, value: float) -> Estimate:
        return cls(value, value, value)

    def bound(self, which: str) -> float:
        return {"point": self.value, "lower": self.low, "upper": self.high}[which]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"value": self.value, "low": self.low, "high": self.high}
        if self.k is not None:
            d.update(k=self.k, n=self.n)
        return d

    def __str__(self) -> str:
        if self.k is None:
            return f"{self.value:.4g}"
        return f"{self.value:.1%} [{self.low:.1%}, {self.high:.1%}]"


@dataclass(frozen=True)
class MetricInfo:
    """What a metric means: a fraction in [0, 1] or any value, and which direction is better for the defender."""

    name: str
    kind: Kind
    better: Better
    description: str
