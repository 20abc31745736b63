"""Poison detection over a model's penultimate features: which class was attacked, and which of its samples.

A backdoor works by teaching the model one feature (the trigger) that outweighs everything else; in the target
class, the poisoned samples therefore sit apart from the clean ones in the model's representation, however they
look as images. Each detector here turns a class's features into one suspicion score per sample:

- ``spectral-signature`` (Tran, Li & Madry 2018): the absolute projection on the top singular vector of the
  class's centred features (the paper ranks by its square: the same order).
- ``spectre`` (Hayase, Kong, Somani & Oh 2021): features reduced to their top principal components, whitened by a
  robust covariance estimate (minimum covariance determinant) of the class, and scored by quantum-entropy (QUE)
  scoring, which weights the directions where the whitened class spreads most.
- ``activation-clustering`` (Chen et al. 2019): features reduced by ICA and split by 2-means; a sample's score is
  its position along the line between the two centres, towards the one farther from the class's median.
- ``projection-gap`` (Bastion's): of the class's top principal directions, the one along which the class splits
  into a majority and a minority with the widest empty band between them; the score is the projection on it,
  oriented towards the minority.

Scores alone do not say whether a class was attacked: every class has a most-suspicious sample. The decision rule
(:func:`decide`) is shared by every detector: each class's scores are split in two by the 1-D 2-means threshold
(Otsu), and the class is attacked when its minority side is separated from its majority by an empty band of at
least ``gap`` robust standard deviations of the majority (q05 of the minority minus q95 of the majority, over
1.4826 x the majority's median absolute deviation). A clean class's natural sub-populations overlap (on
Fashion-MNIST, clean classes' gaps stay below 1.6); a backdoor's samples form a cluster with nothing between it and
the class (gaps of 7 to 11 at 1-5% BadNets or a blended trigger). Flagged samples are the minority side of every
attacked class. The robust z-score of each class's log gap among all classes is reported beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import Tensor

from bastion._registry import Registry
from bastion.errors import ConfigError


class PoisonDetector(Protocol):
    """Scores one class's (n, d) features, higher = more suspicious; registered in :data:`POISON_DETECTORS` and run
    by tests/defenses/contracts/test_poison_contract.py."""

    name: ClassVar[str]
    paper: ClassVar[str]

    def scores(self, features: Tensor, *, seed: int = 0) -> Tensor:
        """(n,) float64 suspicion scores of the class's samples."""
        ...


POISON_DETECTORS: Registry[type[Any]] = Registry("poison detector")


def _centred(features: Tensor) -> Tensor:
    f = features.to(torch.float64)
    return f - f.mean(0)


def _top_directions(features: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The centred features and their top ``k`` right singular vectors (rows of the returned (k, d) matrix)."""
    c = _centred(features)
    _, _, vh = torch.linalg.svd(c, full_matrices=False)
    return c, vh[: min(k, vh.shape[0])]


@POISON_DETECTORS.register("spectral-signature")
@dataclass(frozen=True)
class SpectralSignature:
    """Absolute projection on the class's top singular vector."""

    name: ClassVar[str] = "spectral-signature"
    paper: ClassVar[str] = "Tran, Li & Madry, Spectral Signatures in Backdoor Attacks, NeurIPS 2018"

    def scores(self, features: Tensor, *, seed: int = 0) -> Tensor:
        c, v = _top_directions(features, 1)
        return (c @ v[0]).abs()


@POISON_DETECTORS.register("spectre")
@dataclass(frozen=True)
class Spectre:
    """Robustly whitened top-``dims`` principal components, scored by QUE with strength ``alpha``."""

    name: ClassVar[str] = "spectre"
    paper: ClassVar[str] = "Hayase, Kong, Somani & Oh, SPECTRE: Defending Against Backdoor Attacks, ICML 2021"
    dims: int = 16
    alpha: float = 4.0
    support_fraction: float = 0.6

    def scores(self, features: Tensor, *, seed: int = 0) -> Tensor:
        from sklearn.covariance import MinCovDet

        c, v = _top_directions(features, self.dims)
        z = (c @ v.T).numpy()
        mcd = MinCovDet(random_state=seed, support_fraction=self.support_fraction).fit(z)
        try:
            chol = np.linalg.cholesky(np.linalg.inv(mcd.covariance_))
        except np.linalg.LinAlgError:  # a degenerate class (duplicates): fall back to the plain covariance
            chol = np.linalg.cholesky(np.linalg.pinv(np.cov(z.T) + 1e-9 * np.eye(z.shape[1])))
        w = (z - mcd.location_) @ chol
        cov = w.T @ w / w.shape[0]
        ev, evec = np.linalg.eigh(cov)
        spread = max(float(ev[-1]) - 1.0, 1e-9)
        q = (evec * np.exp(self.alpha * (ev - 1.0) / spread)) @ evec.T
        tau = np.einsum("ij,jk,ik->i", w, q, w) / np.trace(q)
        return torch.from_numpy(np.log(np.maximum(tau, 1e-12)))


@POISON_DETECTORS.register("activation-clustering")
@dataclass(frozen=True)
class ActivationClustering:
    """ICA to ``dims`` components, 2-means; position along the line towards the centre farther from the median."""

    name: ClassVar[str] = "activation-clustering"
    paper: ClassVar[str] = (
        "Chen et al., Detecting Backdoor Attacks on Deep Neural Networks by Activation Clustering, 2019"
    )
    dims: int = 10

    def scores(self, features: Tensor, *, seed: int = 0) -> Tensor:
        import warnings

        from sklearn.cluster import KMeans
        from sklearn.decomposition import FastICA

        c = _centred(features).numpy()
        dims = min(self.dims, c.shape[1], c.shape[0] - 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FastICA's convergence warnings on near-Gaussian classes
            z = FastICA(n_components=dims, random_state=seed, whiten="unit-variance", max_iter=400).fit_transform(c)
        km = KMeans(2, n_init=5, random_state=seed).fit(z)
        # the suspicious cluster is the one whose centre lies farther from the class's coordinate-wise median (a
        # robust centre of the clean majority); Chen et al. take the smaller one, which is the same cluster when
        # 2-means isolates the poison, and the wrong one when it cuts the clean bulk in two
        far = np.linalg.norm(km.cluster_centers_ - np.median(z, axis=0), axis=1)
        small, big = int(np.argmax(far)), int(np.argmin(far))
        if small == big:
            small, big = 1, 0
        line = km.cluster_centers_[small] - km.cluster_centers_[big]
        norm = float(np.linalg.norm(line)) or 1.0
        return torch.from_numpy((z - km.cluster_centers_[big]) @ (line / norm))


@POISON_DETECTORS.register("projection-gap")
@dataclass(frozen=True)
class ProjectionGap:
    """Of the top ``directions`` principal directions, the projection with the widest minority gap.

    Searching further (a 2-means direction, or Fisher's discriminant between the two sides of a split) finds gaps
    in clean classes too: their natural sub-populations separate cleanly along a fitted direction, while along the
    principal directions they overlap and a backdoor's cluster does not (measured on Fashion-MNIST; see
    bench/RESULTS.md)."""

    name: ClassVar[str] = "projection-gap"
    paper: ClassVar[str] = "Bastion: spectral directions searched for an empty band (see the module docstring)"
    directions: int = 5

    def scores(self, features: Tensor, *, seed: int = 0) -> Tensor:
        c, v = _top_directions(features, self.directions)
        best: tuple[float, Tensor] | None = None
        for j in range(v.shape[0]):
            p = c @ v[j]
            for oriented in (p, -p):
                g = split(oriented).gap
                if best is None or g > best[0]:
                    best = (g, oriented)
        assert best is not None
        return best[1]


@dataclass(frozen=True)
class Split:
    """A 1-D score vector cut in two by Otsu's threshold; ``high`` marks the upper side, ``gap`` its separation
    (0 when the upper side is not a minority)."""

    threshold: float
    high: Tensor
    gap: float


def _mad(x: Tensor) -> float:
    return float(1.4826 * (x - x.median()).abs().median())


def split(scores: Tensor, *, min_minority: int = 10) -> Split:
    """Otsu's 1-D two-means cut of ``scores`` (exhaustive over the sorted values, vectorised) and the gap between
    the sides in robust standard deviations of the lower side; the upper side must hold at least ``min_minority``
    samples and fewer than half of them, else the gap is 0."""
    s = scores.to(torch.float64).flatten()
    n = s.numel()
    if n < 2 * max(min_minority, 1) + 1:
        return Split(math.inf, torch.zeros(n, dtype=torch.bool), 0.0)
    v, _ = torch.sort(s)
    cs, cs2 = torch.cumsum(v, 0), torch.cumsum(v * v, 0)
    i = torch.arange(1, n, dtype=torch.float64)
    left = cs2[:-1] - cs[:-1] ** 2 / i
    right = (cs2[-1] - cs2[:-1]) - (cs[-1] - cs[:-1]) ** 2 / (n - i)
    j = int(torch.argmin(left + right)) + 1  # v[:j] low, v[j:] high
    threshold = float((v[j - 1] + v[j]) / 2)
    high = s > threshold
    n_high = n - j
    if n_high < min_minority or n_high * 2 >= n:
        return Split(threshold, high, 0.0)
    lo, hi = v[:j], v[j:]
    scale = _mad(lo)
    if scale <= 0:
        scale = float(lo.std()) or 1e-12
    gap = float(torch.quantile(hi, 0.05) - torch.quantile(lo, 0.95)) / scale
    return Split(threshold, high, max(gap, 0.0))


@dataclass(frozen=True)
class ClassVerdict:
    """One class under one detector: its size, gap, robust z of the log gap among classes, whether it is judged
    attacked and how many of its samples are flagged."""

    label: int
    size: int
    gap: float
    z: float
    attacked: bool
    flagged: int


@dataclass(frozen=True)
class PoisonReport:
    """A detector's decision over a whole training set: the attacked classes and the flagged rows (indices into the
    training set), every row's score (NaN for classes too small to judge) and each class's verdict."""

    detector: str
    gap_threshold: float
    classes: tuple[ClassVerdict, ...]
    flagged: Tensor  # (N,) bool
    scores: Tensor  # (N,) float64
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def attacked(self) -> list[int]:
        return [c.label for c in self.classes if c.attacked]

    @property
    def indices(self) -> Tensor:
        return self.flagged.nonzero().flatten()

    def to_dict(self) -> dict[str, Any]:
        return {
            "detector": self.detector,
            "gap_threshold": self.gap_threshold,
            "attacked_classes": self.attacked,
            "flagged": int(self.flagged.sum()),
            "classes": [c.__dict__ for c in self.classes],
            "settings": dict(self.settings),
        }


def detect_poison(
    features: Tensor,
    labels: Tensor,
    *,
    detector: str | Any = "projection-gap",
    gap: float = 3.0,
    min_class: int = 30,
    min_minority: int = 10,
    seed: int = 0,
) -> PoisonReport:
    """Run ``detector`` on each class of ``features`` (N, d) grouped by ``labels`` (N,) and apply the shared
    decision rule (module docstring). Classes with fewer than ``min_class`` samples are not judged."""
    if not isinstance(features, Tensor) or features.dim() != 2:
        raise ConfigError(f"features must be an (N, d) tensor, got {getattr(features, 'shape', type(features))}")
    if not isinstance(labels, Tensor) or labels.shape != (features.shape[0],):
        raise ConfigError(f"labels must be an (N,) tensor matching {features.shape[0]} features")
    if not torch.isfinite(features).all():
        raise ConfigError("features contain NaN or infinite values: the model's representation is broken")
    if isinstance(gap, bool) or not isinstance(gap, (int, float)) or not math.isfinite(gap) or gap <= 0:
        raise ConfigError(f"gap must be a number of robust standard deviations > 0, got {gap!r}")
    det = POISON_DETECTORS.get(detector)() if isinstance(detector, str) else detector
    n = features.shape[0]
    scores = torch.full((n,), math.nan, dtype=torch.float64)
    flagged = torch.zeros(n, dtype=torch.bool)
    per: list[tuple[int, int, float, Tensor | None]] = []
    for label in torch.unique(labels).tolist():
        idx = (labels == label).nonzero().flatten()
        if idx.numel() < max(min_class, 2 * min_minority + 1):
            per.append((int(label), int(idx.numel()), 0.0, None))
            continue
        s = det.scores(features[idx], seed=seed).to(torch.float64)
        scores[idx] = s
        cut = split(s, min_minority=min_minority)
        per.append((int(label), int(idx.numel()), cut.gap, idx[cut.high] if cut.gap >= gap else None))
    logs = torch.tensor([math.log(max(g, 1e-3)) for _, _, g, _ in per], dtype=torch.float64)
    med = float(logs.median()) if logs.numel() else 0.0
    mad = _mad(logs) if logs.numel() > 2 else 0.0
    verdicts = []
    for (label, size, g, hit), lg in zip(per, logs.tolist(), strict=True):
        if hit is not None:
            flagged[hit] = True
        z = (lg - med) / mad if mad > 0 else 0.0
        verdicts.append(ClassVerdict(label, size, g, z, hit is not None, 0 if hit is None else int(hit.numel())))
    return PoisonReport(
        det.name,
        float(gap),
        tuple(verdicts),
        flagged,
        scores,
        {"detector": det.__dict__ if hasattr(det, "__dict__") else {}, "min_class": min_class, "seed": seed},
    )
