"""What Bastion needs to know about a model, and the two protocols attacks are written against."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from bastion._torch import batch_slices
from bastion.errors import ConfigError
from bastion.types import Bounds


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


@runtime_checkable
class Classifier(Protocol):
    """Black-box access: scores for a batch. Enough for score- and label-based attacks and for extraction."""

    spec: ModelSpec
    queries: int

    def predict_logits(self, x: Tensor) -> Tensor:
        """Scores ``(N, K)`` for inputs ``(N, *spec.input_shape)``; no gradient. Adds N to ``queries``."""
        ...


@runtime_checkable
class DifferentiableClassifier(Classifier, Protocol):
    """White-box access: logits differentiable with respect to the input, with no mode side effects."""

    device: torch.device

    def logits(self, x: Tensor) -> Tensor:
        """Differentiable logits ``(N, K)``. Adds N to ``queries``."""
        ...


def predict_labels(model: Classifier, x: Tensor, *, batch_size: int = 1024) -> Tensor:
    """Top-1 labels of ``model`` on ``x``, computed in batches (on the CPU, as int64)."""
    out = [model.predict_logits(x[s]).argmax(1).cpu() for s in batch_slices(x.shape[0], batch_size)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)
