"""Mahalanobis distance of a network's penultimate features to the nearest class-conditional Gaussian."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from bastion._torch import batch_slices
from bastion.detectors.base import DETECTORS, FittedThreshold
from bastion.errors import ConfigError
from bastion.models.features import penultimate


@DETECTORS.register("mahalanobis")
@dataclass
class Mahalanobis(FittedThreshold):
    """Class-conditional Gaussians with one shared covariance over the model's penultimate features; an input's
    score is its Mahalanobis distance to the closest class mean. Adversarial and out-of-distribution inputs land
    in low-density regions of that feature space even when the model is confident.

    Paper: Lee, Lee, Lee & Shin, "A simple unified framework for detecting out-of-distribution samples and
    adversarial attacks", NeurIPS 2018 (the single-layer score; the paper's input pre-processing and multi-layer
    ensemble are not used).

    Args:
        model: a TorchClassifier (differentiable; the features are read from it).
        layer: the module whose input is the feature vector (default: the last nn.Linear).
        shrinkage: added to the covariance's diagonal, as a fraction of its mean variance (numerical stability).
    """

    name: ClassVar[str] = "mahalanobis"
    needs_labels: ClassVar[bool] = True
    model: Any = None
    layer: str | None = None
    shrinkage: float = 1e-3
    _features: Any = field(default=None, init=False, repr=False)
    _features_grad: Any = field(default=None, init=False, repr=False)
    _means: Tensor | None = field(default=None, init=False, repr=False)
    _chol: Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.model is None:
            raise ConfigError("Mahalanobis needs model= (a TorchClassifier whose features it models)")
        if not self.shrinkage >= 0:
            raise ConfigError(f"shrinkage must be >= 0, got {self.shrinkage}")
        self._features = penultimate(self.model, self.layer)
        self._features_grad = penultimate(self.model, self.layer, grad=True)

    def _fit(self, x: Tensor, y: Tensor | None) -> None:
        assert y is not None
        f = self._feats(x)
        classes = int(self.model.spec.num_classes)
        counts = torch.bincount(y, minlength=classes).to(f.dtype)
        if bool((counts == 0).any()):
            missing = (counts == 0).nonzero().flatten().tolist()
            raise ConfigError(f"mahalanobis needs clean inputs of every class; none of class(es) {missing}")
        means = torch.zeros(classes, f.shape[1], dtype=f.dtype).index_add_(0, y, f) / counts[:, None]
        centred = f - means[y]
        cov = centred.T @ centred / f.shape[0]
        cov += torch.eye(cov.shape[0], dtype=cov.dtype) * (self.shrinkage * float(cov.diagonal().mean()) + 1e-8)
        self._means, self._chol = means, torch.linalg.cholesky(cov)

    def _feats(self, x: Tensor) -> Tensor:
        return torch.cat([self._features(x[s]) for s in batch_slices(x.shape[0], 512)]).double()

    def _score(self, x: Tensor) -> Tensor:
        return self._distance(self._feats(x))

    def score_with_grad(self, x: Tensor) -> Tensor:
        """Exact: the features and the distance are differentiable (the min over classes by subgradient)."""
        self._check(x)
        return self._distance(self._features_grad(x).double())

    def _distance(self, f: Tensor) -> Tensor:
        assert self._means is not None and self._chol is not None
        diff = (f[:, None, :] - self._means[None]).reshape(-1, f.shape[1])  # (N*C, D)
        white = torch.linalg.solve_triangular(self._chol, diff.T, upper=False)  # (D, N*C)
        d2 = white.pow(2).sum(0).reshape(f.shape[0], -1)
        return d2.min(1).values.clamp_min(1e-12).sqrt().float()

    def params(self) -> dict[str, Any]:
        return {**super().params(), "layer": self.layer, "shrinkage": self.shrinkage}
