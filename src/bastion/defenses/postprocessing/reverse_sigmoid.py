"""Reverse sigmoid: a deceptive perturbation that misleads extraction by distillation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from bastion.defenses.postprocessing.base import POSTPROCESSORS, Release, keep_top1
from bastion.errors import ConfigError


@POSTPROCESSORS.register("reverse_sigmoid")
@dataclass(frozen=True)
class ReverseSigmoid:
    """Subtract ``beta * (sigmoid(gamma * logit(y)) - 1/2)`` from each probability ``y`` and renormalise.

    The perturbation is small in probability space but inverts the relation between scores and logits, so a
    substitute trained on the released scores (with a cross-entropy or logit-matching loss) is pushed the wrong way.
    ``beta`` <= 1 keeps every released value non-negative; where the perturbation would reorder the top class the
    values are swapped back, so the label never changes.

    Paper: Lee, Edwards, Molloy & Srivastava, "Defending against neural network model stealing attacks using
    deceptive perturbations", IEEE S&P Workshops 2019 (arXiv 1806.00054, 2018).
    """

    release: ClassVar[Release] = Release.SCORES
    beta: float = 0.7
    gamma: float = 0.4

    def __post_init__(self) -> None:
        for name, value, hi in (("beta", self.beta, 1.0), ("gamma", self.gamma, None)):
            ok = not isinstance(value, bool) and isinstance(value, (int, float)) and value > 0
            if not ok or (hi is not None and value > hi):
                bound = f"(0, {hi}]" if hi is not None else "> 0"
                raise ConfigError(f"reverse_sigmoid: {name} must be a number {bound}, got {value!r}")

    def __call__(self, scores: Tensor) -> Tensor:
        y = scores.clamp(1e-6, 1 - 1e-6)
        r = self.beta * (torch.sigmoid(self.gamma * torch.logit(y)) - 0.5)
        out = (scores - r).clamp_min(0)
        out = out / out.sum(1, keepdim=True).clamp_min(1e-12)
        return keep_top1(scores, out)
