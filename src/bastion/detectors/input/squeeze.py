"""Feature squeezing: an input whose prediction moves when it is coarsened is suspicious."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from bastion.defenses.preprocessing import BitDepth, MedianFilter, Squeezer
from bastion.detectors.base import DETECTORS, FittedThreshold
from bastion.errors import ConfigError, NoGradientError


def default_squeezers(input_shape: tuple[int, ...], bit_depth: int | None = None) -> tuple[Squeezer, ...]:
    """Bit depth ``bit_depth`` (default 4; 2 for images under 16 px, whose few grey levels 4 bits keep intact), no
    median filter: measured on Fashion-MNIST at 5% FPR, naive PGD detection was 0.84 with bit depth 4 alone and
    0.34 with a 2x2 median added (bench/RESULTS.md), because the median moves clean predictions too."""
    small = len(input_shape) == 3 and min(input_shape[1:]) < 16
    return (BitDepth(bit_depth if bit_depth is not None else (2 if small else 4)),)


@DETECTORS.register("feature-squeezing")
@dataclass
class FeatureSqueezing(FittedThreshold):
    """Score: the largest L1 distance between the model's probabilities on the input and on each squeezed copy of
    it. Natural inputs keep their prediction when coarsened; adversarial perturbations, tuned to the exact values,
    mostly do not. Needs only the model's scores, so it works for any Classifier (ONNX and remote ones included).

    Paper: Xu, Evans & Qi, "Feature Squeezing: Detecting Adversarial Examples in Deep Neural Networks", NDSS 2018
    (the joint detector over several squeezers, threshold at a false-positive rate on clean data).

    Args:
        model: any Classifier (predict_logits).
        squeezers: default :func:`default_squeezers`; the right choice depends on the data (the paper uses bit
            depth 1 and a 2x2 median for MNIST, 5 for CIFAR-10); bench/detectors.py --sweep measures them.
    """

    name: ClassVar[str] = "feature-squeezing"
    model: Any = None
    squeezers: tuple[Squeezer, ...] | None = None
    _squeezers: tuple[Squeezer, ...] = field(default=(), init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.model is None or not hasattr(self.model, "predict_logits"):
            raise ConfigError("FeatureSqueezing needs model= (a Classifier whose predictions it compares)")
        shape = self.model.spec.input_shape
        image = len(shape) == 3
        chosen = self.squeezers or default_squeezers(shape)
        if not image and any(isinstance(s, MedianFilter) for s in chosen):
            raise ConfigError("a median filter needs image inputs (C, H, W); use BitDepth for tables")
        self._squeezers = tuple(chosen)

    def _probs(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return torch.softmax(self.model.predict_logits(x).float(), 1)

    def _fit(self, x: Tensor, y: Tensor | None) -> None:
        del x, y  # nothing to learn but the threshold, which the template sets on the held-out share

    def squeezed(self, x: Tensor) -> Tensor:
        """The squeezed copies of ``x``, one block of N per squeezer (k*N, ...)."""
        bounds = self.model.spec.bounds
        return torch.cat([s(x, bounds) for s in self._squeezers])

    def score_probs(self, probs: Tensor, squeezed_probs: Tensor) -> Tensor:
        """Scores from the model's probabilities on the inputs (N, K) and on :meth:`squeezed` (k*N, K), for a
        caller that runs the model on both anyway."""
        p = squeezed_probs.reshape(len(self._squeezers), probs.shape[0], -1)
        return (p - probs[None]).abs().sum(2).amax(0)

    def _score(self, x: Tensor) -> Tensor:
        # one query of the model for the input and all its squeezed copies
        p = self._probs(torch.cat([x, self.squeezed(x)]))
        n = x.shape[0]
        return self.score_probs(p[:n], p[n:])

    def score_with_grad(self, x: Tensor) -> Tensor:
        """BPDA: the squeezers are piecewise constant, so their backward pass is taken as the identity (a
        straight-through estimator); the model's own gradients are exact. Needs a differentiable model."""
        self._check(x)
        logits = getattr(self.model, "logits", None)
        if logits is None:
            raise NoGradientError("BPDA through feature squeezing needs a differentiable model (logits)")
        bounds = self.model.spec.bounds
        squeezed = [x + (s(x.detach(), bounds) - x).detach() for s in self._squeezers]
        p = torch.softmax(logits(torch.cat([x, *squeezed])).float(), 1).reshape(len(squeezed) + 1, x.shape[0], -1)
        return (p[1:] - p[0]).abs().sum(2).amax(0)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "squeezers": [s.name for s in self._squeezers]}
