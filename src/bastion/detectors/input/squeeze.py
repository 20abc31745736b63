"""Feature squeezing: an input whose prediction moves when it is coarsened is suspicious."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from bastion.defenses.preprocessing import BitDepth, MedianFilter, Squeezer
from bastion.detectors.base import DETECTORS, FittedThreshold
from bastion.errors import ConfigError


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
        squeezers: default bit depth 4 and, for images of at least 16x16, a 2x2 median filter; the right choice
            depends on the data (the paper uses bit depth 1 for MNIST, 5 for CIFAR-10).
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
        # the paper's squeezers for images; a median window wipes out images as small as 8x8 digits
        large = image and min(shape[1:]) >= 16
        default: tuple[Squeezer, ...] = (BitDepth(4), MedianFilter(2)) if large else (BitDepth(4),)
        chosen = self.squeezers or default
        if not image and any(isinstance(s, MedianFilter) for s in chosen):
            raise ConfigError("a median filter needs image inputs (C, H, W); use BitDepth for tables")
        self._squeezers = tuple(chosen)

    def _probs(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return torch.softmax(self.model.predict_logits(x).float(), 1)

    def _fit(self, x: Tensor, y: Tensor | None) -> None:
        del x, y  # nothing to learn but the threshold, which the template sets on the held-out share

    def _score(self, x: Tensor) -> Tensor:
        bounds = self.model.spec.bounds
        # one query of the model for the input and all its squeezed copies
        batch = torch.cat([x] + [s(x, bounds) for s in self._squeezers])
        p = self._probs(batch).reshape(len(self._squeezers) + 1, x.shape[0], -1)
        return (p[1:] - p[0]).abs().sum(2).amax(0)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "squeezers": [s.name for s in self._squeezers]}
