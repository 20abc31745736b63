"""Label flipping: the inputs stay, a share of their labels is changed.

Random flipping (each chosen label moved to a uniformly drawn other class) degrades the model as a whole;
targeted flipping (labels of ``source`` moved to ``target``) teaches it to confuse one class for another while
its overall accuracy barely moves. Biggio, Nelson & Laskov (2012) and Xiao et al. (2015) study both. MITRE ATLAS
AML.T0020. Neither has a trigger: the harm is measured by clean accuracy and, when targeted, by the share of
``source`` test inputs answered as ``target``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from bastion.attacks.poisoning.base import (
    POISONING_ATTACKS,
    PoisonedSet,
    check_class,
    check_inputs,
    check_rate,
    pick,
)
from bastion.errors import ConfigError
from bastion.types import ModelSpec


@POISONING_ATTACKS.register("label-flip")
@dataclass(frozen=True)
class LabelFlip:
    """``mode`` "random": labels of ``rate * N`` random rows move to another class drawn uniformly; "targeted":
    labels of ``rate * N`` rows of class ``source`` become ``target``."""

    name: ClassVar[str] = "label-flip"
    atlas: ClassVar[str] = "AML.T0020"
    mode: str = "random"
    source: int | None = None
    target: int | None = None

    def problems(self, spec: ModelSpec) -> list[str]:
        if self.mode == "random":
            if self.source is not None or self.target is not None:
                return ["random label flipping takes no source or target class (use mode 'targeted')"]
            if spec.num_classes < 2:
                return ["label flipping needs at least 2 classes"]
            return []
        if self.mode != "targeted":
            return [f"label-flip mode must be 'random' or 'targeted', got {self.mode!r}"]
        out = check_class("source", self.source, spec) + check_class("target", self.target, spec)
        if not out and self.source == self.target:
            out.append(f"source and target must differ, both are {self.source}")
        return out

    def poison(self, x: Tensor, y: Tensor, spec: ModelSpec, *, rate: float, generator: torch.Generator) -> PoisonedSet:
        rate = check_rate(rate)
        check_inputs(x, y, spec)
        problems = self.problems(spec)
        if problems:
            raise ConfigError("invalid label-flip settings", problems=problems)
        n = y.shape[0]
        py = y.clone()
        if self.mode == "random":
            idx = pick(torch.arange(n), round(rate * n), generator, "labels")
            shift = torch.randint(1, spec.num_classes, (idx.numel(),), generator=generator)
            py[idx] = (y[idx] + shift) % spec.num_classes
        else:
            assert self.target is not None
            idx = pick(
                torch.eq(y, int(self.source or 0)).nonzero().flatten(),
                round(rate * n),
                generator,
                f"labels of class {self.source}",
            )
            py[idx] = self.target
        mask = torch.zeros(n, dtype=torch.bool)
        mask[idx] = True
        return PoisonedSet(x.clone(), py, mask, self.name, self.target, self.source, self.to_dict() | {"rate": rate})

    def triggered(self, x: Tensor, y: Tensor, spec: ModelSpec) -> tuple[Tensor, Tensor] | None:
        if self.mode == "targeted":
            return x, torch.eq(y, int(self.source or 0))  # no trigger: success is a source input answered as the target
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"attack": self.name, "mode": self.mode, "source": self.source, "target": self.target}
