"""Checks a training set must pass before anyone trains on it: schema, value range, duplicates, leakage, balance.

Each check returns :class:`~bastion.defenses.data.findings.Finding` objects naming the affected training rows.
Everything is vectorised: exact duplicates are found by hashing rows in one NumPy pass, near-duplicates by
nearest neighbours in a 32-dimensional projection (batched distance matrices) confirmed on the raw values.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from bastion._torch import batch_slices
from bastion.defenses.data.findings import Finding
from bastion.types import ModelSpec


def schema(x: Tensor, y: Tensor, spec: ModelSpec) -> list[Finding]:
    """Inputs of the declared shape with finite values; integer labels inside [0, classes)."""
    out = []
    if tuple(x.shape[1:]) != tuple(spec.input_shape) or x.shape[0] != y.shape[0]:
        out.append(
            Finding(
                "schema",
                "error",
                f"inputs have shape {tuple(x.shape)} and labels {tuple(y.shape)}; expected (N, "
                f"{', '.join(map(str, spec.input_shape))}) and (N,)",
            )
        )
        return out
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        out.append(Finding("schema", "error", f"labels must be integers, got {y.dtype}"))
        return out
    bad_label = ((y < 0) | (y >= spec.num_classes)).nonzero().flatten()
    if bad_label.numel():
        out.append(
            Finding(
                "schema",
                "error",
                f"{bad_label.numel()} labels outside [0, {spec.num_classes - 1}]",
                tuple(bad_label.tolist()),
                tuple(float(v) for v in y[bad_label].tolist()),
                "label",
                removable=True,
            )
        )
    finite = (
        torch.isfinite(x.flatten(1)).all(1) if x.dtype.is_floating_point else torch.ones(x.shape[0], dtype=torch.bool)
    )
    bad = (~finite).nonzero().flatten()
    if bad.numel():
        out.append(
            Finding(
                "schema",
                "error",
                f"{bad.numel()} inputs hold NaN or infinite values",
                tuple(bad.tolist()),
                removable=True,
            )
        )
    return out


def value_range(x: Tensor, spec: ModelSpec, *, tolerance: float = 1e-6) -> list[Finding]:
    """Inputs with any value outside the data's declared bounds (by more than ``tolerance``)."""
    lo, hi = float(spec.bounds[0]), float(spec.bounds[1])
    flat = x.flatten(1).to(torch.float64)
    excess = torch.clamp(lo - flat, min=0).amax(1).maximum(torch.clamp(flat - hi, min=0).amax(1))
    bad = (excess > tolerance).nonzero().flatten()
    if not bad.numel():
        return []
    return [
        Finding(
            "range",
            "error",
            f"{bad.numel()} inputs have values outside the bounds [{lo:g}, {hi:g}] (up to {float(excess.max()):.3g} "
            "beyond): rescale them or declare the bounds the data really has",
            tuple(bad.tolist()),
            tuple(excess[bad].tolist()),
            "largest excess",
            removable=True,
        )
    ]


def _row_keys(x: Tensor) -> np.ndarray:
    a = np.ascontiguousarray(x.flatten(1).to(torch.float32).numpy())
    return a.view(np.dtype((np.void, a.dtype.itemsize * a.shape[1]))).ravel()


def duplicates(x: Tensor, y: Tensor) -> list[Finding]:
    """Byte-identical inputs: copies with one label (all but the first are removable) and copies whose labels
    disagree (all are removable: which label is right cannot be told from the data)."""
    if x.shape[0] < 2:
        return []
    keys = _row_keys(x)
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    dup_groups = np.nonzero(counts > 1)[0]
    if dup_groups.size == 0:
        return []
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    labels = y.numpy()
    copies: list[int] = []
    conflicting: list[int] = []
    for g in dup_groups:
        members = order[starts[g] : starts[g] + counts[g]]
        if np.unique(labels[members]).size > 1:
            conflicting += members.tolist()
        else:
            copies += members[1:].tolist()
    out = []
    if copies:
        out.append(
            Finding(
                "duplicates",
                "warning",
                f"{len(copies)} inputs are exact copies of earlier ones with the same label (they weigh those "
                "inputs more in training)",
                tuple(sorted(copies)),
                removable=True,
            )
        )
    if conflicting:
        out.append(
            Finding(
                "conflicting-duplicates",
                "error",
                f"{len(conflicting)} inputs are exact copies of each other with different labels",
                tuple(sorted(conflicting)),
                removable=True,
            )
        )
    return out


def test_leakage(x_train: Tensor, x_test: Tensor) -> list[Finding]:
    """Training inputs that also appear, byte for byte, in the test split (an accuracy measured on them is not a
    measurement of generalisation)."""
    if x_train.shape[0] == 0 or x_test.shape[0] == 0 or tuple(x_train.shape[1:]) != tuple(x_test.shape[1:]):
        return []
    hit = np.isin(_row_keys(x_train), _row_keys(x_test))
    idx = np.nonzero(hit)[0]
    if idx.size == 0:
        return []
    return [
        Finding(
            "test-leakage",
            "warning",
            f"{idx.size} training inputs also appear in the test split",
            tuple(idx.tolist()),
            removable=True,
        )
    ]


def near_duplicates(
    x: Tensor, y: Tensor, spec: ModelSpec, *, tolerance: float = 0.02, dims: int = 32, batch: int = 2048
) -> list[Finding]:
    """Pairs of distinct inputs whose root-mean-square difference is at most ``tolerance`` of the value range:
    each input's nearest neighbour in a ``dims``-dimensional principal projection, confirmed on the raw values.
    Reported, not removed: a near-copy is often legitimate (two photos of one item); a near-copy with another label
    is the suspicious kind, and is listed separately in the details."""
    n = x.shape[0]
    if n < 2:
        return []
    flat = x.flatten(1).to(torch.float32)
    width = float(spec.bounds[1]) - float(spec.bounds[0])
    mean = flat.mean(0)
    sample = flat[torch.randperm(n, generator=torch.Generator().manual_seed(0))[: min(n, 5000)]] - mean
    k = min(dims, flat.shape[1], sample.shape[0])
    _, _, vh = torch.linalg.svd(sample, full_matrices=False)
    z = (flat - mean) @ vh[:k].T
    keys = _row_keys(x)
    limit = tolerance * width * math.sqrt(flat.shape[1])  # the projection never lengthens a difference
    pairs: list[tuple[int, int, float]] = []
    for s in batch_slices(n, batch):
        d = torch.cdist(z[s], z)
        rows = torch.arange(s.start, s.stop)
        d[torch.arange(d.shape[0]), rows] = math.inf
        near, j = d.min(1)
        cand = (near <= limit).nonzero().flatten()
        a, b = rows[cand], j[cand]
        rms = (flat[a] - flat[b]).pow(2).mean(1).sqrt() / width
        same = (
            torch.from_numpy(keys[a.numpy()] == keys[b.numpy()]) if cand.numel() else torch.zeros(0, dtype=torch.bool)
        )
        keep = (rms <= tolerance) & ~same  # exact copies are the duplicates check's
        pairs += [
            (min(int(p), int(q)), max(int(p), int(q)), float(r))
            for p, q, r in zip(a[keep].tolist(), b[keep].tolist(), rms[keep].tolist(), strict=True)
        ]
    uniq = sorted({(a, b): r for a, b, r in pairs}.items())
    if not uniq:
        return []
    later = [b for (a, b), _ in uniq]
    dist = [r for _, r in uniq]
    conflicting = [(a, b) for (a, b), _ in uniq if int(y[a]) != int(y[b])]
    return [
        Finding(
            "near-duplicates",
            "warning" if conflicting else "info",
            f"{len(uniq)} pairs of inputs differ by at most {tolerance:.0%} of the value range (root mean square); "
            f"{len(conflicting)} of them carry different labels",
            tuple(later),
            tuple(dist),
            "rms difference / range",
            removable=False,
            details={"pairs": [[a, b] for (a, b), _ in uniq][:1000], "conflicting_pairs": conflicting[:1000]},
        )
    ]


def class_balance(y: Tensor, spec: ModelSpec, *, max_ratio: float = 3.0) -> list[Finding]:
    """Samples per class; a warning when a class is empty or the largest is more than ``max_ratio`` times the
    smallest. Never removable: a rare class is fixed by collecting data or weighting, not by deleting."""
    counts = torch.bincount(y.clamp(0, spec.num_classes - 1), minlength=spec.num_classes)[: spec.num_classes]
    names = spec.class_names or tuple(str(i) for i in range(spec.num_classes))
    per = {names[i]: int(c) for i, c in enumerate(counts.tolist())}
    empty = [names[i] for i, c in enumerate(counts.tolist()) if c == 0]
    low = int(counts.min())
    ratio = math.inf if low == 0 else float(counts.max()) / low
    if empty:
        return [
            Finding(
                "class-balance",
                "warning",
                f"classes with no training data: {', '.join(empty)}",
                details={"counts": per},
            )
        ]
    if ratio > max_ratio:
        return [
            Finding(
                "class-balance",
                "warning",
                f"the largest class has {ratio:.1f}x the samples of the smallest (more than {max_ratio:g}x)",
                details={"counts": per, "ratio": ratio},
            )
        ]
    return [
        Finding(
            "class-balance",
            "info",
            f"classes are balanced within {ratio:.2f}x",
            details={"counts": per, "ratio": ratio},
        )
    ]
