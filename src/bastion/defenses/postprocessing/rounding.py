"""Rounding: release probabilities to a fixed number of decimals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from bastion.defenses.postprocessing.base import POSTPROCESSORS, Release
from bastion.errors import ConfigError


@POSTPROCESSORS.register("round")
@dataclass(frozen=True)
class Rounding:
    """Round each probability to ``decimals`` places.

    Coarse scores starve score-based attacks (Square, extraction by distillation) of the small differences they
    climb on; at 1-2 decimals most queries near a decision boundary return identical answers. Tramèr et al.,
    "Stealing machine learning models via prediction APIs", USENIX Security 2016, discuss rounding as a counter.
    """

    release: ClassVar[Release] = Release.SCORES
    decimals: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.decimals, bool) or not isinstance(self.decimals, int) or not 0 <= self.decimals <= 8:
            raise ConfigError(f"round: decimals must be an integer in [0, 8], got {self.decimals!r}")

    def __call__(self, scores: Tensor) -> Tensor:
        return scores.round(decimals=self.decimals)
