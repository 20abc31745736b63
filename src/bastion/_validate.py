"""Input validation shared by every public entry point: collect all problems, then raise once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from bastion.errors import InputValidationError
from bastion.types import Bounds

BOUNDS_TOLERANCE = 1e-6


def tensor_problems(
    x: object,
    *,
    name: str,
    input_shape: Sequence[int] | None = None,
    bounds: Bounds | None = None,
) -> list[str]:
    """Problems with a batch of inputs: type, floating dtype, shape ``(N, *input_shape)``, finiteness, bounds."""
    if not isinstance(x, Tensor):
        return [f"{name} must be a torch.Tensor, got {type(x).__name__} (convert with torch.as_tensor(...))"]
    problems: list[str] = []
    if not x.is_floating_point():
        problems.append(f"{name} must have a floating dtype (e.g. torch.float32), got {x.dtype}; use x.float()")
    if input_shape is not None:
        want = tuple(int(s) for s in input_shape)
        if x.dim() != len(want) + 1 or tuple(x.shape[1:]) != want:
            problems.append(
                f"{name} must have shape (N, {', '.join(map(str, want))}), got {tuple(x.shape)}; "
                "add the batch dimension with x.unsqueeze(0) for a single input"
            )
    if x.dim() == 0 or x.shape[0] == 0:
        problems.append(f"{name} is empty: give at least one input")
    if problems:
        return problems
    if x.is_floating_point():
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            bad = int((~finite).flatten(1).any(1).sum())
            problems.append(f"{name} contains NaN or infinite values in {bad} input(s); clean or drop them")
        elif bounds is not None:
            lo, hi = bounds
            mn, mx = float(x.min()), float(x.max())
            if mn < lo - BOUNDS_TOLERANCE or mx > hi + BOUNDS_TOLERANCE:
                problems.append(
                    f"{name} values must lie in [{lo:g}, {hi:g}] (the model's input bounds), "
                    f"got min {mn:.4g}, max {mx:.4g}; scale the data the way the model was trained"
                )
    return problems


def label_problems(y: object, *, name: str, n: int | None, num_classes: int) -> list[str]:
    """Problems with a label vector: integer tensor of shape (N,) with values in [0, num_classes)."""
    if not isinstance(y, Tensor):
        return [f"{name} must be a torch.Tensor of class indices, got {type(y).__name__}"]
    problems = []
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        problems.append(f"{name} must hold integer class indices (torch.long), got {y.dtype}; use y.long()")
    if y.dim() != 1:
        problems.append(f"{name} must have shape (N,), got {tuple(y.shape)}")
    elif n is not None and y.shape[0] != n:
        problems.append(f"{name} has {y.shape[0]} entries but there are {n} inputs; give one label per input")
    if not problems and y.numel():
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            problems.append(f"{name} values must be class indices in [0, {num_classes - 1}], got min {lo}, max {hi}")
    return problems


def raise_if(problems: list[str], what: str) -> None:
    if problems:
        raise InputValidationError(f"invalid {what}", problems=problems)


def pydantic_problems(error: Any) -> list[str]:
    """One line per problem of a pydantic ``ValidationError``: ``where.in.the.file: what is wrong``."""
    out = []
    for err in error.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = str(err["msg"]).removeprefix("Value error, ")
        out.append(f"{loc}: {msg}")
    return out
