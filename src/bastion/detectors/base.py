"""The detector contract: scikit-learn's fit / score / predict, with the threshold set at a false-positive rate.

``fit(x, y)`` learns what clean inputs look like from all but a held-out share of them, then sets ``threshold_`` so
that a fraction ``fpr`` of the held-out clean inputs score above it: the false-positive rate is chosen by the user
and measured on data the detector did not fit, never assumed. ``score(x)`` is per input, higher is more suspicious;
``predict(x)`` is ``score(x) > threshold_``.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import torch
from torch import Tensor

from bastion._registry import Registry
from bastion._validate import raise_if, tensor_problems
from bastion.errors import ConfigError, InputValidationError, NoGradientError


@runtime_checkable
class Detector(Protocol):
    name: ClassVar[str]
    threshold_: float

    def fit(self, x: Tensor, y: Tensor | None = None) -> Self: ...

    def score(self, x: Tensor) -> Tensor: ...

    def predict(self, x: Tensor) -> Tensor: ...


@dataclass
class FittedThreshold(abc.ABC):
    """Template for detectors: input checks, the held-out split and the threshold at ``fpr``.

    Subclasses implement ``_fit(x, y)`` on the fitting share and ``_score(x)`` (batched, no gradient needed).
    ``input_shape`` is learned from ``fit`` and every later input is checked against it.
    """

    name: ClassVar[str] = "detector"
    needs_labels: ClassVar[bool] = False
    fpr: float = 0.05
    holdout: float = 0.2
    seed: int = 0
    threshold_: float = field(default=math.nan, init=False)
    input_shape: tuple[int, ...] | None = field(default=None, init=False)
    clean_fpr_: float = field(default=math.nan, init=False)  # measured on the held-out share

    def __post_init__(self) -> None:
        problems = []
        if not 0 < self.fpr < 1:
            problems.append(f"fpr must be in (0, 1), got {self.fpr}")
        if not 0 < self.holdout < 1:
            problems.append(f"holdout must be in (0, 1), got {self.holdout}")
        if problems:
            raise ConfigError(f"invalid {self.name} settings", problems=problems)

    def fit(self, x: Tensor, y: Tensor | None = None) -> Self:
        """Fit on clean inputs ``x`` (N, *shape) (with their labels ``y`` where the detector needs them) and set
        ``threshold_`` at ``fpr`` on a held-out share of them."""
        raise_if(tensor_problems(x, name="x"), f"{self.name} fit input")
        if self.needs_labels and y is None:
            raise InputValidationError(f"{self.name} needs the clean inputs' labels: fit(x, y)")
        if y is not None and (y.dim() != 1 or y.shape[0] != x.shape[0]):
            raise InputValidationError(f"y must be (N,) labels for the {x.shape[0]} inputs, got {tuple(y.shape)}")
        n_held = round(x.shape[0] * self.holdout)
        if n_held < math.ceil(1 / self.fpr) or x.shape[0] - n_held < 10:
            raise InputValidationError(
                f"{self.name} needs more clean inputs: {x.shape[0]} leave {n_held} held out, fewer than the "
                f"{math.ceil(1 / self.fpr)} that a false-positive rate of {self.fpr:g} can be set on"
            )
        self.input_shape = tuple(x.shape[1:])
        perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(self.seed))
        held, rest = perm[:n_held], perm[n_held:]
        self._fit(x[rest], None if y is None else y[rest])
        clean = self._score(x[held])
        self.threshold_ = float(torch.quantile(clean.double(), 1 - self.fpr))
        self.clean_fpr_ = float((clean > self.threshold_).float().mean())
        return self

    def score(self, x: Tensor) -> Tensor:
        """(N,) suspicion scores, higher is more suspicious."""
        self._check(x)
        return self._score(x)

    def predict(self, x: Tensor) -> Tensor:
        """(N,) bool: flagged inputs (score above ``threshold_``)."""
        return self.score(x) > self.threshold_

    def _check(self, x: Tensor) -> None:
        if self.input_shape is None or math.isnan(self.threshold_):
            raise ConfigError(f"{self.name} is not fitted: call fit(clean_x{', y' if self.needs_labels else ''}) first")
        raise_if(tensor_problems(x, name="x", input_shape=self.input_shape), f"{self.name} input")

    def traceable_score(self, x: Tensor) -> Tensor:
        """(N,) scores from plain PyTorch operations on an already validated ``x``: what the gateway exports into
        one onnxruntime graph with the model (``bastion.detectors.screen``). The default is :meth:`_score`; a
        detector whose ``_score`` leaves PyTorch (its own onnxruntime session, numpy) overrides this. The export is
        checked against :meth:`score` on examples, so a score that does not trace stays on its own path."""
        return self._score(x)

    def score_with_grad(self, x: Tensor) -> Tensor:
        """(N,) scores as a differentiable function of ``x``, for adaptive attacks that know the detector (Tramèr
        et al. 2020): exact where the detector is differentiable, a straight-through (BPDA, Athalye et al. 2018)
        approximation where it is not. A detector that has no such score raises NoGradientError."""
        raise NoGradientError(f"the {self.name} detector has no differentiable score for an adaptive attack")

    @abc.abstractmethod
    def _fit(self, x: Tensor, y: Tensor | None) -> None: ...

    @abc.abstractmethod
    def _score(self, x: Tensor) -> Tensor: ...

    def params(self) -> dict[str, Any]:
        return {"fpr": self.fpr, "holdout": self.holdout, "seed": self.seed}


DETECTORS: Registry[type[FittedThreshold]] = Registry("detector")
