"""A served model's input detectors run as one step: every detector's scores and flags for a batch of inputs."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import torch
from torch import Tensor

from bastion.defenses.ensemble import Ensemble, EnsembleOutput
from bastion.detectors.base import FittedThreshold
from bastion.detectors.input import FeatureSqueezing, Mahalanobis
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

    def __call__(self, x: Tensor) -> tuple[Detection, ...]:
        out = []
        with torch.no_grad():
            for d in self.detectors:
                s = d.score(x).float()
                out.append(Detection(d.name, s, s > d.threshold_, d.fpr))
        return tuple(out)

    def predict(self, model: Ensemble, x: Tensor) -> tuple[EnsembleOutput, tuple[Detection, ...]]:
        """The model's output on ``x`` and every detector's verdict in one forward pass where the detectors allow:
        the squeezed copies ride in the same batch as ``x``, and Mahalanobis reads its features from that pass.
        Equal (up to float rounding) to ``model.predict(x)`` and ``self(x)``; about one model call per request
        instead of three on the gateway's path."""
        n = int(x.shape[0])
        squeezing = [d for d in self.detectors if isinstance(d, FeatureSqueezing) and d.model is model]
        members = {id(m) for m in model.members}
        tapped = [d for d in self.detectors if isinstance(d, Mahalanobis) and id(d.model) in members]
        extra = [d.squeezed(x) for d in squeezing]
        for checked in (*squeezing, *tapped):  # the others check x in their own score()
            checked._check(x)
        batch = torch.cat([x, *extra]) if extra else x
        with torch.no_grad(), ExitStack() as stack:
            taps = [stack.enter_context(d.tap.capture()) for d in tapped]
            out = model.predict(batch)
        probs = out.probs[:n]
        scores: dict[int, Tensor] = {}
        offset = n
        for sq, e in zip(squeezing, extra, strict=True):
            scores[id(sq)] = sq.score_probs(probs, out.probs[offset : offset + e.shape[0]])
            offset += e.shape[0]
        for ma, got in zip(tapped, taps, strict=True):
            scores[id(ma)] = ma.score_features(torch.cat(got)[:n])
        detections = []
        with torch.no_grad():
            for d in self.detectors:
                s = (scores[id(d)] if id(d) in scores else d.score(x)).float()
                detections.append(Detection(d.name, s, s > d.threshold_, d.fpr))
        return EnsembleOutput(probs, out.disagreement[:n]), tuple(detections)

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
