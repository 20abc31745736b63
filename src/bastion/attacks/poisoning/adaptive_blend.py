"""Adaptive blend: a backdoor built to defeat defenses that look for the poisoned samples' separate cluster.

Paper: Qi, Xie, Li, Wang, Wang & Mittal, "Revisiting the Assumption of Latent Separability for Backdoor Defenses",
ICLR 2023. Detectors such as spectral signatures, SPECTRE, activation clustering and Bastion's projection gap rely
on the poisoned samples forming their own cluster in the model's representation. This attack weakens that cluster
in two ways: each poisoned sample carries only a random half of the trigger's pieces (the full trigger is used at
inference), and as many "cover" samples carry the same partial trigger while keeping their correct labels, so the
trigger alone no longer sets the target class's poisoned samples apart. The rows it changes include the cover
samples; the backdoor's samples are the ones it relabelled (``PoisonedSet.params["relabelled"]``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from bastion.attacks.poisoning.base import (
    POISONING_ATTACKS,
    PoisonedSet,
    check_class,
    check_inputs,
    check_rate,
    pick,
)
from bastion.attacks.poisoning.triggers import _pattern
from bastion.errors import ConfigError
from bastion.types import ModelSpec


@POISONING_ATTACKS.register("adaptive-blend")
@dataclass(frozen=True)
class AdaptiveBlend:
    """Blend trigger cut into ``pieces`` x ``pieces`` tiles; training samples carry ``keep`` of the tiles at
    ``alpha``, test inputs all of them at ``test_alpha``; ``cover`` cover samples per poisoned one keep their
    labels."""

    name: ClassVar[str] = "adaptive-blend"
    atlas: ClassVar[str] = "AML.T0020"
    target: int = 0
    alpha: float = 0.15
    test_alpha: float = 0.2
    pieces: int = 4
    keep: float = 0.5
    cover: float = 1.0
    pattern: str = "noise"
    seed: int = 0

    def problems(self, spec: ModelSpec) -> list[str]:
        out = check_class("target", self.target, spec)
        for name in ("alpha", "test_alpha", "keep"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 < v <= 1:
                out.append(f"{name} must be in (0, 1], got {v!r}")
        if not isinstance(self.cover, (int, float)) or not math.isfinite(self.cover) or self.cover < 0:
            out.append(f"cover must be a number >= 0 (cover samples per poisoned one), got {self.cover!r}")
        shape = tuple(spec.input_shape)
        if len(shape) != 3:
            out.append(f"the adaptive blend tiles an image (C, H, W); these inputs have shape {shape}")
        elif not isinstance(self.pieces, int) or not 1 <= self.pieces <= min(shape[1], shape[2]):
            out.append(f"pieces must be an int between 1 and {min(shape[1], shape[2])}, got {self.pieces!r}")
        return out

    def _tiles(self, spec: ModelSpec) -> Tensor:
        """(pieces^2, H, W) 0/1 masks of the tiles."""
        _, h, w = (int(v) for v in spec.input_shape)
        rows = torch.arange(h) * self.pieces // h
        cols = torch.arange(w) * self.pieces // w
        tile = rows[:, None] * self.pieces + cols[None, :]
        return (tile[None] == torch.arange(self.pieces**2)[:, None, None]).float()

    def _stamp(self, x: Tensor, spec: ModelSpec, alpha: float, generator: torch.Generator | None) -> Tensor:
        lo, hi = float(spec.bounds[0]), float(spec.bounds[1])
        pat = _pattern(self.pattern, tuple(spec.input_shape), lo, hi, self.seed).to(x.dtype)
        tiles = self._tiles(spec)
        if generator is None:
            mask = tiles.sum(0).expand(x.shape[0], -1, -1)
        else:
            k = tiles.shape[0]
            chosen = torch.rand(x.shape[0], k, generator=generator).argsort(1) < max(1, round(self.keep * k))
            mask = torch.einsum("nk,khw->nhw", chosen.float(), tiles)
        weight = alpha * mask[:, None]
        return (1 - weight) * x + weight * pat

    def poison(self, x: Tensor, y: Tensor, spec: ModelSpec, *, rate: float, generator: torch.Generator) -> PoisonedSet:
        rate = check_rate(rate)
        check_inputs(x, y, spec)
        problems = self.problems(spec)
        if problems:
            raise ConfigError("invalid adaptive-blend settings", problems=problems)
        n = y.shape[0]
        poison = pick((y != self.target).nonzero().flatten(), round(rate * n), generator, "inputs of other classes")
        rest = torch.ones(n, dtype=torch.bool)
        rest[poison] = False
        cover_count = round(self.cover * poison.numel())
        cover = pick(rest.nonzero().flatten(), cover_count, generator, "cover inputs") if cover_count else poison[:0]
        px, py = x.clone(), y.clone()
        px[poison] = self._stamp(x[poison], spec, self.alpha, generator)
        py[poison] = self.target
        if cover.numel():
            px[cover] = self._stamp(x[cover], spec, self.alpha, generator)
        mask = torch.zeros(n, dtype=torch.bool)
        mask[poison] = True
        mask[cover] = True
        params = self.to_dict() | {
            "rate": rate,
            "relabelled": sorted(poison.tolist()),
            "cover_rows": int(cover.numel()),
        }
        return PoisonedSet(px, py, mask, self.name, self.target, None, params)

    def triggered(self, x: Tensor, y: Tensor, spec: ModelSpec) -> tuple[Tensor, Tensor] | None:
        problems = self.problems(spec)
        if problems:
            raise ConfigError("invalid adaptive-blend settings", problems=problems)
        return self._stamp(x, spec, self.test_alpha, None), y != self.target

    def to_dict(self) -> dict[str, Any]:
        return {
            "attack": self.name,
            "target": self.target,
            "alpha": self.alpha,
            "test_alpha": self.test_alpha,
            "pieces": self.pieces,
            "keep": self.keep,
            "cover": self.cover,
            "pattern": self.pattern,
            "seed": self.seed,
        }
