"""Shared value types: the norm of a perturbation, the threat model an attack works under, and a model's spec."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class ModelSpec:
    """The contract of a classifier's input and output: shape of one input, classes, value bounds."""

    input_shape: tuple[int, ...]
    num_classes: int
    bounds: Bounds = (0.0, 1.0)
    class_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        problems = []
        try:
            shape = tuple(int(s) for s in self.input_shape)
        except (TypeError, ValueError):
            shape = ()
        if not shape or any(s <= 0 for s in shape):
            problems.append(f"input_shape must be a non-empty tuple of positive ints, got {self.input_shape!r}")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 2:
            problems.append(f"num_classes must be an int >= 2, got {self.num_classes!r}")
        try:
            lo, hi = float(self.bounds[0]), float(self.bounds[1])
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError
        except (TypeError, ValueError, IndexError):
            problems.append(f"bounds must be a finite pair (low, high) with low < high, got {self.bounds!r}")
            lo, hi = 0.0, 1.0
        names = tuple(str(c) for c in self.class_names)
        if names and isinstance(self.num_classes, int) and len(names) != self.num_classes:
            problems.append(f"class_names has {len(names)} names for {self.num_classes} classes")
        if problems:
            raise ConfigError("invalid model spec", problems=problems)
        object.__setattr__(self, "input_shape", shape)
        object.__setattr__(self, "bounds", (lo, hi))
        object.__setattr__(self, "class_names", names or tuple(str(i) for i in range(self.num_classes)))

    def __repr__(self) -> str:
        lo, hi = self.bounds
        return f"ModelSpec(input_shape={self.input_shape}, num_classes={self.num_classes}, bounds=({lo:g}, {hi:g}))"

    @property
    def input_dim(self) -> int:
        return math.prod(self.input_shape)

    def to_dict(self) -> dict[str, object]:
        return {
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "bounds": list(self.bounds),
            "class_names": list(self.class_names),
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> ModelSpec:
        return cls(
            input_shape=tuple(d["input_shape"]),  # type: ignore[arg-type]
            num_classes=d["num_classes"],  # type: ignore[arg-type]
            bounds=tuple(d.get("bounds", (0.0, 1.0))),  # type: ignore[arg-type]
            class_names=tuple(d.get("class_names", ())),  # type: ignore[arg-type]
        )
