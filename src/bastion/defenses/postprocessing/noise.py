"""Calibrated noise that blurs the scores but never changes the top-1 label."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from bastion.defenses.postprocessing.base import POSTPROCESSORS, Release, keep_top1
from bastion.errors import ConfigError


@POSTPROCESSORS.register("noise")
@dataclass(frozen=True)
class CalibratedNoise:
    """Add Gaussian noise of standard deviation ``sigma`` to the probabilities, renormalise, keep the top-1 class.

    Fresh noise on every answer makes repeated or near-identical queries disagree, which breaks the finite
    differences and greedy comparisons of score-based attacks; the top-1 guarantee (by swapping values where the
    noise would reorder the first place) means a legitimate client's label is never affected. ``sigma`` is in
    probability units, so its effect on a caller is easy to state. Seeded only for tests: in service the generator is
    seeded from the operating system's CSPRNG, so an attacker cannot replay the noise.
    """

    release: ClassVar[Release] = Release.SCORES
    sigma: float = 0.05
    seed: int | None = None
    _generator: torch.Generator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.sigma, bool) or not isinstance(self.sigma, (int, float)) or not 0 < self.sigma <= 1:
            raise ConfigError(f"noise: sigma must be a number in (0, 1], got {self.sigma!r}")
        gen = torch.Generator()
        gen.manual_seed(self.seed if self.seed is not None else secrets.randbits(63))
        object.__setattr__(self, "_generator", gen)

    def __call__(self, scores: Tensor) -> Tensor:
        noise = torch.randn(scores.shape, generator=self._generator, dtype=scores.dtype).to(scores.device)
        noisy = (scores + self.sigma * noise).clamp_min(0)
        noisy = noisy / noisy.sum(1, keepdim=True).clamp_min(1e-12)
        return keep_top1(scores, noisy)
