"""Shared value types: the norm of a perturbation and the threat model an attack works under."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeAlias

from bastion.errors import ConfigError

Bounds: TypeAlias = tuple[float, float]


class Norm(StrEnum):
    """The norm that measures a perturbation."""

    LINF = "linf"
    L2 = "l2"

    @classmethod
    def parse(cls, value: Norm | str) -> Norm:
        if isinstance(value, Norm):
            return value
        if isinstance(value, str):
            key = value.strip().lower().replace("_", "")
            aliases = {"linf": cls.LINF, "inf": cls.LINF, "l_inf": cls.LINF, "l2": cls.L2, "2": cls.L2}
            if key in aliases:
                return aliases[key]
        raise ConfigError(f"unknown norm {value!r}; use 'linf' or 'l2'")


@dataclass(frozen=True)
class ThreatModel:
    """What the adversary may do: perturb each input by at most ``eps`` in ``norm``, staying inside ``bounds``.

    ``bounds`` of ``None`` means "the model's input bounds" (``ModelSpec.bounds``); attacks resolve it with
    :meth:`resolve_bounds`, so no attack carries literal value bounds. ``targeted`` attacks need a target per input.
    """

    norm: Norm = Norm.LINF
    eps: float = 0.1
    bounds: Bounds | None = None
    targeted: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "norm", Norm.parse(self.norm))
        problems = []
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)):
            problems.append(f"eps must be a number, got {type(self.eps).__name__}")
        elif not math.isfinite(self.eps) or self.eps <= 0:
            problems.append(f"eps must be a finite number > 0, got {self.eps}")
        if self.bounds is not None:
            try:
                lo, hi = (float(v) for v in self.bounds)
            except (TypeError, ValueError):
                problems.append(f"bounds must be a pair (low, high), got {self.bounds!r}")
            else:
                if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                    problems.append(f"bounds must be finite with low < high, got {self.bounds!r}")
                else:
                    object.__setattr__(self, "bounds", (lo, hi))
        if problems:
            raise ConfigError("invalid threat model", problems=problems)
        object.__setattr__(self, "eps", float(self.eps))

    def resolve_bounds(self, model_bounds: Bounds) -> Bounds:
        """The value bounds in force: the threat model's own, else the model's."""
        return self.bounds if self.bounds is not None else (float(model_bounds[0]), float(model_bounds[1]))

    def to_dict(self) -> dict[str, object]:
        return {"norm": self.norm.value, "eps": self.eps, "bounds": self.bounds, "targeted": self.targeted}
