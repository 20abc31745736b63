"""What a serve-time output transform is, and how several are chained.

A postprocessor maps the model's probabilities (N, K) to what a client is shown, shape (N, K) again. It never decides
the label: the gateway returns the argmax of the unmodified probabilities, so a defence here can only withhold or
blur information, never make the service wrong. ``release`` says how much of the vector a client gets to see.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

import torch
from torch import Tensor

from bastion._registry import Registry
from bastion.errors import ConfigError, InputValidationError


class Release(IntEnum):
    """How much a response reveals, from least to most."""

    LABELS = 0
    TOP_K = 1
    SCORES = 2


class Postprocessor(Protocol):
    """Serve-time transform: (N, K) probabilities -> (N, K) released scores."""

    release: Release

    def __call__(self, scores: Tensor) -> Tensor: ...


POSTPROCESSORS: Registry[type[Any]] = Registry("postprocessor")


def check_probabilities(scores: Tensor) -> None:
    """Refuse anything that is not a finite (N, K) batch of probabilities."""
    if not isinstance(scores, Tensor):
        raise InputValidationError(f"scores must be a torch.Tensor, got {type(scores).__name__}")
    if scores.dim() != 2 or scores.shape[1] < 2:
        raise InputValidationError(f"scores must have shape (N, K) with K >= 2, got {tuple(scores.shape)}")
    if not scores.is_floating_point() or not bool(torch.isfinite(scores).all()):
        raise InputValidationError("scores must be finite floating-point probabilities")
    if bool((scores < 0).any()) or bool((scores > 1).any()):
        raise InputValidationError("scores must be probabilities in [0, 1]; apply softmax to logits first")


def keep_top1(original: Tensor, released: Tensor) -> Tensor:
    """Where ``released`` moved the top-1 class, swap values so the original top-1 class holds the largest one.

    A swap keeps the released values (and their sum) and restores the ranking's first place without inventing a value.
    """
    top = original.argmax(1, keepdim=True)
    new_top = released.argmax(1, keepdim=True)
    wrong = (top != new_top).squeeze(1)
    if not bool(wrong.any()):
        return released
    out = released.clone()
    rows = wrong.nonzero().squeeze(1)
    a, b = top[rows, 0], new_top[rows, 0]
    va, vb = out[rows, a].clone(), out[rows, b].clone()
    out[rows, a], out[rows, b] = vb, va
    return out


@dataclass(frozen=True)
class Chain:
    """Postprocessors applied in order; the chain releases as little as its most restrictive member."""

    steps: tuple[Postprocessor, ...]

    @property
    def release(self) -> Release:
        return min((s.release for s in self.steps), default=Release.SCORES)

    @property
    def k(self) -> int | None:
        """For a top-k release: the smallest k of the chain."""
        ks = [int(getattr(s, "k", 0)) for s in self.steps if s.release is Release.TOP_K]
        return min(ks) if ks else None

    def __call__(self, scores: Tensor) -> Tensor:
        check_probabilities(scores)
        out = scores
        for step in self.steps:
            out = step(out)
        return out


def create_postprocessor(spec: str | dict[str, Any]) -> Postprocessor:
    """Build one postprocessor from a name (``"label_only"``) or a mapping (``{"name": "round", "decimals": 2}``)."""
    if isinstance(spec, str):
        name, params = spec, {}
    elif isinstance(spec, dict):
        params = dict(spec)
        name = params.pop("name", None)
        if not isinstance(name, str):
            raise ConfigError(f"a postprocessor mapping needs a 'name' string, got {spec!r}")
    else:
        raise ConfigError(f"a postprocessor is a name or a mapping with 'name', got {type(spec).__name__}")
    cls = POSTPROCESSORS.get(name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise ConfigError(f"postprocessor {name!r}: {exc}") from None


def create_chain(specs: list[str | dict[str, Any]] | tuple[str | dict[str, Any], ...]) -> Chain:
    """A chain from a list of specs, as written in the gateway's YAML (an empty list releases full scores)."""
    if not isinstance(specs, (list, tuple)):
        raise ConfigError(f"postprocessing must be a list of postprocessors, got {type(specs).__name__}")
    return Chain(tuple(create_postprocessor(s) for s in specs))
