"""Top-k: release only the k most likely classes and their scores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from bastion.defenses.postprocessing.base import POSTPROCESSORS, Release
from bastion.errors import ConfigError


@POSTPROCESSORS.register("top_k")
@dataclass(frozen=True)
class TopK:
    """Zero every score but the ``k`` largest; the response lists just those k (class, score) pairs.

    Hides the tail of the distribution that model-inversion and extraction attacks learn from, while keeping the
    answer useful to a legitimate client who wants alternatives to the top class.
    """

    release: ClassVar[Release] = Release.TOP_K
    k: int = 3

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(f"top_k: k must be a positive integer, got {self.k!r}")

    def __call__(self, scores: Tensor) -> Tensor:
        k = min(self.k, scores.shape[1])
        idx = scores.topk(k, dim=1).indices
        return torch.zeros_like(scores).scatter_(1, idx, scores.gather(1, idx))
