"""Label only: release nothing but the predicted class."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from bastion.defenses.postprocessing.base import POSTPROCESSORS, Release


@POSTPROCESSORS.register("label_only")
@dataclass(frozen=True)
class LabelOnly:
    """Replace the scores with a one-hot vector of the top class; the response carries labels only.

    The strongest output defence short of refusing service: score-based attacks (Square, distillation-based
    extraction, confidence-based membership inference) get no signal, and only decision-based attacks such as
    HopSkipJump, which need far more queries, remain.
    """

    release: ClassVar[Release] = Release.LABELS

    def __call__(self, scores: Tensor) -> Tensor:
        return torch.zeros_like(scores).scatter_(1, scores.argmax(1, keepdim=True), 1.0)
