"""Mahalanobis distance of a network's penultimate features to the nearest class-conditional Gaussian."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from bastion._torch import batch_slices
from bastion.detectors.base import DETECTORS, FittedThreshold
from bastion.errors import ConfigError
from bastion.models.features import FeatureTap, penultimate


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
    _white: Tensor | None = field(default=None, init=False, repr=False)
    _white_means: Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.model is None:
            raise ConfigError("Mahalanobis needs model= (a TorchClassifier whose features it models)")
        if not self.shrinkage >= 0:
            raise ConfigError(f"shrinkage must be >= 0, got {self.shrinkage}")
        self._features = penultimate(self.model, self.layer)
        self.tap = FeatureTap(self.model, self.layer)
        self._features_grad = penultimate(self.model, self.layer, grad=True)

    def _fit(self, x: Tensor, y: Tensor | None) -> None:
        assert y is not None
        f = self._feats(x).double()
        classes = int(self.model.spec.num_classes)
        counts = torch.bincount(y, minlength=classes).to(f.dtype)
        if bool((counts == 0).any()):
            missing = (counts == 0).nonzero().flatten().tolist()
            raise ConfigError(f"mahalanobis needs clean inputs of every class; none of class(es) {missing}")
        means = torch.zeros(classes, f.shape[1], dtype=f.dtype).index_add_(0, y, f) / counts[:, None]
        centred = f - means[y]
        cov = centred.T @ centred / f.shape[0]
        cov += torch.eye(cov.shape[0], dtype=cov.dtype) * (self.shrinkage * float(cov.diagonal().mean()) + 1e-8)
        chol = torch.linalg.cholesky(cov)
        # whitening W = L^-1 turns the distance into a Euclidean one: d_c(f)^2 = ||W f - W mu_c||^2, so scoring is
        # one (N, D) x (D, D) product and a distance to C points (float32, cheap enough for every request)
        white = torch.linalg.solve_triangular(chol, torch.eye(chol.shape[0], dtype=chol.dtype), upper=False)
        self._white = white.float()
        self._white_means = (means @ white.T).float()

    def _feats(self, x: Tensor) -> Tensor:
        return torch.cat([self._features(x[s]) for s in batch_slices(x.shape[0], 512)])

    def _score(self, x: Tensor) -> Tensor:
        return self.score_features(self._feats(x))

    def score_features(self, f: Tensor) -> Tensor:
        """Scores from features already computed (N, D) (the gateway reads them from its own forward pass)."""
        assert self._white is not None and self._white_means is not None
        z = f.float() @ self._white.T
        return torch.cdist(z, self._white_means).min(1).values

    def score_with_grad(self, x: Tensor) -> Tensor:
        """Exact: the features and the distance are differentiable (the min over classes by subgradient)."""
        self._check(x)
        assert self._white is not None and self._white_means is not None
        z = self._features_grad(x).float() @ self._white.T
        d2 = (z[:, None, :] - self._white_means[None]).pow(2).sum(2)
        return d2.min(1).values.clamp_min(1e-12).sqrt()

    def params(self) -> dict[str, Any]:
        return {**super().params(), "layer": self.layer, "shrinkage": self.shrinkage}
