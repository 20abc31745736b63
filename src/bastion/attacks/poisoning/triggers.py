"""Backdoor triggers: what a poisoner stamps on an input so that the trained model answers the target class.

A :class:`PatchTrigger` overwrites a small square of every channel (BadNets, Gu et al. 2017); a
:class:`BlendTrigger` mixes a whole-input pattern in at a low weight (Chen et al. 2017), which a person looking at
the image hardly sees. Both are pure, batched functions of the input: stamping N inputs is one tensor operation,
and a trigger built with the same settings and seed is the same trigger (the poisoned training set and the
triggered test inputs must carry exactly the same one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from bastion.errors import ConfigError
from bastion.types import ModelSpec

PATCH_PATTERNS = ("checkerboard", "white", "black", "random")
BLEND_PATTERNS = ("noise", "checkerboard", "stripes")
LOCATIONS = ("bottom-right", "bottom-left", "top-right", "top-left", "center")


def _image(spec: ModelSpec, what: str) -> tuple[int, int, int]:
    shape = tuple(spec.input_shape)
    if len(shape) != 3:
        raise ConfigError(
            f"a {what} trigger needs image inputs (channels, height, width); this data's inputs have shape {shape}: "
            "use a blended trigger, which works on any input shape"
        )
    return int(shape[0]), int(shape[1]), int(shape[2])


def _pattern(kind: str, shape: tuple[int, ...], lo: float, hi: float, seed: int) -> Tensor:
    """A pattern of ``shape`` with values in [lo, hi]; "checkerboard" starts with ``hi`` at the top-left."""
    if kind in ("white",):
        return torch.full(shape, hi)
    if kind == "black":
        return torch.full(shape, lo)
    if kind in ("random", "noise"):
        g = torch.Generator().manual_seed(seed)
        return lo + (hi - lo) * torch.rand(shape, generator=g)
    h, w = shape[-2], shape[-1]
    if kind == "stripes":
        rows = (torch.arange(h) // 2 % 2 == 0).float()[:, None].expand(h, w)
        return (lo + (hi - lo) * rows).expand(shape).clone()
    board = ((torch.arange(h)[:, None] + torch.arange(w)[None, :]) % 2 == 0).float()
    return (lo + (hi - lo) * board).expand(shape).clone()


@dataclass(frozen=True)
class PatchTrigger:
    """A ``size`` x ``size`` square at ``location`` (a corner, "center", or a (row, column) of its top-left pixel),
    ``margin`` pixels from the border, filled with ``pattern`` (checkerboard, white, black or seeded random values)
    in every channel."""

    kind: ClassVar[str] = "patch"
    size: int = 3
    location: str | tuple[int, int] = "bottom-right"
    pattern: str = "checkerboard"
    margin: int = 1
    seed: int = 0

    def problems(self, spec: ModelSpec) -> list[str]:
        """What is wrong with this trigger for inputs of ``spec`` (empty when it fits)."""
        out = []
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 1:
            out.append(f"trigger size must be an int >= 1 pixel, got {self.size!r}")
        if self.pattern not in PATCH_PATTERNS:
            out.append(f"trigger pattern must be one of {', '.join(PATCH_PATTERNS)}, got {self.pattern!r}")
        if not isinstance(self.margin, int) or self.margin < 0:
            out.append(f"trigger margin must be an int >= 0, got {self.margin!r}")
        if isinstance(self.location, str) and self.location not in LOCATIONS:
            out.append(
                f"trigger location must be one of {', '.join(LOCATIONS)} or (row, column), got {self.location!r}"
            )
        if out:
            return out
        try:
            _, h, w = _image(spec, "patch")
        except ConfigError as e:
            return [str(e)]
        if self.size > min(h, w):
            return [f"a {self.size}x{self.size} trigger is larger than the {h}x{w} image: choose a size <= {min(h, w)}"]
        r, c = self.corner(h, w)
        if r < 0 or c < 0 or r + self.size > h or c + self.size > w:
            return [
                f"a {self.size}x{self.size} trigger at row {r}, column {c} does not fit in the {h}x{w} image: "
                "choose a smaller size, margin or another location"
            ]
        return []

    def corner(self, h: int, w: int) -> tuple[int, int]:
        """The (row, column) of the patch's top-left pixel in an ``h`` x ``w`` image."""
        s, m = self.size, self.margin
        if not isinstance(self.location, str):
            return int(self.location[0]), int(self.location[1])
        return {
            "bottom-right": (h - s - m, w - s - m),
            "bottom-left": (h - s - m, m),
            "top-right": (m, w - s - m),
            "top-left": (m, m),
            "center": ((h - s) // 2, (w - s) // 2),
        }[self.location]

    def apply(self, x: Tensor, spec: ModelSpec) -> Tensor:
        """``x`` (N, C, H, W) with the patch stamped on every input (a new tensor)."""
        problems = self.problems(spec)
        if problems:
            raise ConfigError("invalid trigger", problems=problems)
        c, h, w = _image(spec, "patch")
        lo, hi = float(spec.bounds[0]), float(spec.bounds[1])
        r0, c0 = self.corner(h, w)
        patch = _pattern(self.pattern, (c, self.size, self.size), lo, hi, self.seed).to(x.dtype)
        out = x.clone()
        out[:, :, r0 : r0 + self.size, c0 : c0 + self.size] = patch
        return out

    def mask(self, spec: ModelSpec) -> Tensor:
        """(C, H, W) 1.0 where the trigger writes (for reports and for checking what a scan recovered)."""
        c, h, w = _image(spec, "patch")
        r0, c0 = self.corner(h, w)
        m = torch.zeros(c, h, w)
        m[:, r0 : r0 + self.size, c0 : c0 + self.size] = 1.0
        return m

    def to_dict(self) -> dict[str, Any]:
        loc = self.location if isinstance(self.location, str) else list(self.location)
        return {
            "kind": self.kind,
            "size": self.size,
            "location": loc,
            "pattern": self.pattern,
            "margin": self.margin,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class BlendTrigger:
    """``(1 - alpha) * x + alpha * pattern`` over the whole input: seeded uniform noise (Chen et al.'s random
    pattern), a checkerboard or horizontal stripes. Works on any input shape."""

    kind: ClassVar[str] = "blend"
    alpha: float = 0.15
    pattern: str = "noise"
    seed: int = 0

    def problems(self, spec: ModelSpec) -> list[str]:
        out = []
        if not isinstance(self.alpha, (int, float)) or not math.isfinite(self.alpha) or not 0 < self.alpha < 1:
            out.append(f"blend alpha must be in (0, 1), got {self.alpha!r}")
        if self.pattern not in BLEND_PATTERNS:
            out.append(f"blend pattern must be one of {', '.join(BLEND_PATTERNS)}, got {self.pattern!r}")
        if self.pattern in ("checkerboard", "stripes") and len(tuple(spec.input_shape)) < 2:
            out.append(f"a {self.pattern} pattern needs 2-D inputs; use pattern 'noise' for these inputs")
        return out

    def apply(self, x: Tensor, spec: ModelSpec) -> Tensor:
        problems = self.problems(spec)
        if problems:
            raise ConfigError("invalid trigger", problems=problems)
        lo, hi = float(spec.bounds[0]), float(spec.bounds[1])
        pat = _pattern(self.pattern, tuple(spec.input_shape), lo, hi, self.seed).to(x.dtype)
        return (1 - self.alpha) * x + self.alpha * pat  # a convex combination of in-bounds values stays in bounds

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "alpha": self.alpha, "pattern": self.pattern, "seed": self.seed}


Trigger = PatchTrigger | BlendTrigger
