"""A served model's input detectors run as one step: every detector's scores and flags for a batch of inputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from bastion.detectors.base import FittedThreshold
from bastion.errors import ConfigError
from bastion.monitors.base import Detection


@dataclass(frozen=True)
class Screen:
    """Fitted detectors in front of one model. ``__call__`` scores a batch with each and returns their verdicts
    (``bastion.monitors.Detection``) in order; ``flagged`` is the union over detectors."""

    detectors: tuple[FittedThreshold, ...]

    def __post_init__(self) -> None:
        unfitted = [d.name for d in self.detectors if d.input_shape is None]
        if unfitted:
            raise ConfigError(f"detector(s) {unfitted} are not fitted: fit them on clean inputs first")

    @classmethod
    def of(cls, detectors: Sequence[FittedThreshold]) -> Screen:
        return cls(tuple(detectors))

    def __call__(self, x: Tensor) -> tuple[Detection, ...]:
        out = []
        with torch.no_grad():
            for d in self.detectors:
                s = d.score(x).float()
                out.append(Detection(d.name, s, s > d.threshold_, d.fpr))
        return tuple(out)

    @staticmethod
    def flagged(detections: Sequence[Detection]) -> Tensor:
        """(N,) bool: inputs that any detector flagged (empty detections: none)."""
        if not detections:
            return torch.zeros(0, dtype=torch.bool)
        return torch.stack([d.flagged for d in detections]).any(0)

    def __len__(self) -> int:
        return len(self.detectors)

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.detectors]
