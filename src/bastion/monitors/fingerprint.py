"""Robust, portable fingerprints of inputs: what threat intelligence shares instead of the inputs themselves.

A fingerprint must survive what an attacker does to an adversarial input before sending it again (fresh noise, a
pixel of shift, brightness/contrast jitter), must not make unrelated natural inputs collide, and must be computed
identically by another team with another model and another version of Bastion or PyTorch. A trained encoder fails
the last requirement, so this is a fixed function, specified in full by :class:`FingerprintScheme`:

1. images (C, H, W): crop ``margin`` pixels off every side, average-pool to at most ``grid`` x ``grid``, subtract
   the image's mean (brightness) — the sign step below ignores the scale (contrast). Tabular rows (D,): subtract
   ``center`` and divide by ``scale`` per feature (the exporter's median and interquartile range), so features of
   very different units weigh alike;
2. project onto ``bits`` fixed +-1 directions (read, row-major, from the SHAKE-256 stream of
   ``b"bastion-simhash-1:" + str(bits)``, one bit per entry, 1 meaning +1) and keep each projection's sign, a
   projection within 1e-5 of the fingerprint's largest counting as negative (SimHash, Charikar 2002): the Hamming
   distance between two fingerprints estimates the angle between the inputs;
3. matching tries every crop offset of the incoming image (``(2 * margin + 1) ** 2`` of them), so a shift of up to
   ``margin`` pixels leaves the cropped content identical.

Measured (bench/intel.py, bench/RESULTS.md): at an equal false-positive rate (1 in 10,000 pairs of natural
inputs), Square adversarial examples replayed with fresh noise, a 1 px shift and brightness/contrast jitter match
at 0.98-1.00 on digits and Fashion-MNIST, where ImageHash's pHash falls to 0.03-0.05 once the image moves a pixel.
A fingerprint is not the input, but with ``bits`` well above
the pooled size it pins down a coarse, brightness-normalised thumbnail: share only fingerprints of inputs that were
flagged as attacks (``bastion intel export`` does).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.errors import InputValidationError

SCHEME = "bastion-simhash-1"
BITS = (64, 128, 256, 512, 1024)
MAX_FEATURES = 1 << 16
MAX_PROJECTION = 1 << 23  # entries of the +-1 projection matrix (32 MB as float32)
MAX_FUSED = 1 << 23  # entries of the folded input-to-projection matrix kept per scheme and offset set
FUSED_ROWS = 64  # batches up to this many inputs use the folded matrix


@dataclass(frozen=True)
class FingerprintScheme:
    """How fingerprints of one input space are made (see the module docstring): two parties with equal schemes
    compute equal fingerprints of equal inputs."""

    shape: tuple[int, ...]
    bits: int = 256
    margin: int = 0
    grid: int = 16
    center: tuple[float, ...] | None = None
    scale: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        problems = _scheme_problems(self)
        if problems:
            raise InputValidationError("fingerprint scheme: " + "; ".join(problems))

    @classmethod
    def for_inputs(cls, shape: tuple[int, ...], clean: Tensor, *, bits: int = 256) -> FingerprintScheme:
        """The scheme for a model taking inputs of ``shape``: images get a crop margin of 1 px (2 px from 24 px up);
        tabular rows get per-feature centre and scale from ``clean`` (N, D) inputs of the model's own data."""
        shape = tuple(int(s) for s in shape)
        if len(shape) == 3:
            return cls(shape, bits, margin=1 if min(shape[1:]) < 24 else 2)
        x = clean.reshape(clean.shape[0], -1).double()
        if x.shape[0] < 2:
            raise InputValidationError("a tabular fingerprint scheme needs at least 2 clean inputs for its scale")
        q = torch.quantile(x, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64), dim=0)
        spread = q[2] - q[0]
        spread = torch.where(spread > 0, spread, x.std(0)).clamp_min(1e-6)
        return cls(
            shape, bits, center=tuple(_round(v) for v in q[1].tolist()), scale=tuple(_round(v) for v in spread.tolist())
        )

    # --- serialisation --------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"scheme": SCHEME, "shape": list(self.shape), "bits": self.bits, "margin": self.margin}
        if self.is_image:
            d["grid"] = self.grid
        else:
            d["center"] = list(self.center or ())
            d["scale"] = list(self.scale or ())
        return d

    @classmethod
    def from_dict(cls, d: Any) -> FingerprintScheme:
        """A scheme from :meth:`to_dict` output (from a bundle: every field is checked)."""
        if not isinstance(d, dict):
            raise InputValidationError(f"fingerprint scheme must be an object, got {type(d).__name__}")
        if d.get("scheme") != SCHEME:
            raise InputValidationError(
                f"unknown fingerprint scheme {str(d.get('scheme'))[:40]!r}; this Bastion reads {SCHEME!r}"
            )
        extra = set(d) - {"scheme", "shape", "bits", "margin", "grid", "center", "scale"}
        if extra:
            raise InputValidationError(f"fingerprint scheme has unknown fields {sorted(extra)[:5]}")

        def ints(v: Any, what: str) -> tuple[int, ...]:
            if not isinstance(v, list) or not 1 <= len(v) <= 3 or not all(type(i) is int for i in v):
                raise InputValidationError(f"fingerprint scheme {what} must be a list of 1-3 integers")
            return tuple(v)

        def floats(v: Any, what: str) -> tuple[float, ...] | None:
            if v is None:
                return None
            if not isinstance(v, list) or len(v) > MAX_FEATURES or not all(type(f) in (int, float) for f in v):
                raise InputValidationError(f"fingerprint scheme {what} must be a list of numbers")
            return tuple(float(f) for f in v)

        for name in ("bits", "margin", "grid"):
            if name in d and type(d[name]) is not int:
                raise InputValidationError(f"fingerprint scheme {name} must be an integer")
        return cls(
            ints(d.get("shape"), "shape"),
            int(d.get("bits", 256)),
            int(d.get("margin", 0)),
            int(d.get("grid", 16)),
            floats(d.get("center"), "center"),
            floats(d.get("scale"), "scale"),
        )

    @cached_property
    def key(self) -> str:
        """A short digest naming the scheme (fingerprints are comparable only between equal keys)."""
        import json

        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    # --- computing --------------------------------------------------------------------------------------------------

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3

    @property
    def offsets(self) -> int:
        """How many crop offsets a match tries."""
        return (2 * self.margin + 1) ** 2 if self.is_image else 1

    @cached_property
    def _pooled(self) -> tuple[int, int]:
        _, h, w = self.shape
        return min(h - 2 * self.margin, self.grid), min(w - 2 * self.margin, self.grid)

    @cached_property
    def _projection(self) -> Tensor:
        if self.is_image:
            gh, gw = self._pooled
            d = self.shape[0] * gh * gw
        else:
            d = self.shape[0]
        stream = hashlib.shake_256(f"{SCHEME}:{self.bits}".encode()).digest(math.ceil(d * self.bits / 8))
        signs = unpack(torch.frombuffer(bytearray(stream), dtype=torch.uint8))
        return signs[: d * self.bits].reshape(d, self.bits)

    def packed(self, x: Tensor, *, all_offsets: bool = False) -> Tensor:
        """:meth:`signs` packed as :func:`pack` packs them, (N, bits / 8) or (N, S, bits / 8) uint8, in fewer steps
        (the request path's form: one matrix product, a threshold and numpy's ``packbits`` on a zero-copy view)."""
        return pack_projections(self._project(x, all_offsets))

    def module(self) -> nn.Module | None:
        """The centre crop's projections (before the sign; :func:`pack_projections` finishes them) as a traceable
        module over inputs (N, *shape): the folded matrix and offset, for a compiled graph to include. None where
        that matrix would be too large."""
        fused = self._fused(False)
        return None if fused is None else _Affine(*fused)

    def _project(self, x: Tensor, all_offsets: bool) -> Tensor:
        n = x.shape[0]
        flat = x.reshape(n, -1).float()
        # the folded matrix spends more arithmetic (D x S x bits a row against pooling's fewer) to save per-call
        # overhead: it wins for the few inputs of a request, not for a calibration set
        fused = self._fused(all_offsets) if n <= FUSED_ROWS else None
        if fused is None:
            return self.projections(flat, all_offsets=all_offsets)
        weight, bias = fused
        proj = torch.addmm(bias, flat, weight)
        return proj.reshape(n, self.offsets, self.bits) if all_offsets else proj

    def signs(self, x: Tensor, *, all_offsets: bool = False) -> Tensor:
        """+-1 fingerprints of inputs ``x`` (N, D) or (N, *shape): (N, bits) at the centre crop, or (N, S, bits)
        at every crop offset with ``all_offsets``.

        Every step before the sign is affine in the input (crop, average pooling, centring, per-feature scaling,
        projection), so they are folded into one matrix and offset, made once per scheme from the step-by-step
        definition (:meth:`projections`): one matrix product per batch on the request path. Where that matrix would
        be large (many offsets of a large image) the steps run one by one instead."""
        return sign_of(self._project(x, all_offsets))

    def projections(self, x: Tensor, *, all_offsets: bool = False) -> Tensor:
        """The scheme step by step (its definition), before the sign: (N, bits), or (N, S, bits)."""
        n = x.shape[0]
        x = x.reshape(n, *self.shape).float()
        if not self.is_image:
            center = torch.tensor(self.center, dtype=torch.float64)
            scale = torch.tensor(self.scale, dtype=torch.float64)
            z = ((x.double() - center) / scale).float()
            out = z @ self._projection
            return out[:, None, :] if all_offsets else out
        m = self.margin
        _, h, w = self.shape
        spots = [(dy, dx) for dy in range(2 * m + 1) for dx in range(2 * m + 1)] if all_offsets else [(m, m)]
        crops = torch.stack([x[:, :, dy : dy + h - 2 * m, dx : dx + w - 2 * m] for dy, dx in spots], 1)
        crops = crops.reshape(n * len(spots), self.shape[0], h - 2 * m, w - 2 * m)
        pooled = F.adaptive_avg_pool2d(crops, self._pooled).flatten(1)
        pooled = pooled - pooled.mean(1, keepdim=True)
        out = pooled @ self._projection
        return out.reshape(n, len(spots), self.bits) if all_offsets else out

    def _fused(self, all_offsets: bool) -> tuple[Tensor, Tensor] | None:
        """(D, S * bits) matrix and offset equal to :meth:`projections`, cached; None where it would be too large."""
        cache = self.__dict__.setdefault("_fused_cache", {})
        if all_offsets not in cache:
            d = math.prod(self.shape)
            s = self.offsets if all_offsets else 1
            if d * s * self.bits > MAX_FUSED:
                cache[all_offsets] = None
            else:
                with torch.no_grad():
                    zero = torch.zeros(1, d)
                    bias = self.projections(zero, all_offsets=all_offsets).reshape(-1)
                    weight = self.projections(torch.eye(d), all_offsets=all_offsets).reshape(d, -1) - bias
                cache[all_offsets] = (weight.contiguous(), bias)
        fused: tuple[Tensor, Tensor] | None = cache[all_offsets]
        return fused

    def fingerprints(self, x: Tensor) -> list[str]:
        """Hex fingerprints of inputs ``x`` at the centre crop (what is shared)."""
        return [to_hex(s) for s in self.signs(x)]

    def check_hex(self, value: Any) -> str:
        """``value`` if it is a hex fingerprint of this scheme's length, else a one-line error."""
        if not isinstance(value, str) or len(value) != self.bits // 4:
            raise InputValidationError(f"a {self.bits}-bit fingerprint is {self.bits // 4} hex digits")
        try:
            bytes.fromhex(value)
        except ValueError:
            raise InputValidationError("a fingerprint must be hex digits") from None
        return value.lower()


class _Affine(nn.Module):
    weight: Tensor
    bias: Tensor

    def __init__(self, weight: Tensor, bias: Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight.clone())
        self.register_buffer("bias", bias.clone())

    def forward(self, x: Tensor) -> Tensor:
        return torch.addmm(self.bias, x.flatten(1).float(), self.weight)


def pack_projections(proj: Tensor) -> Tensor:
    """Packed fingerprints (..., bits / 8) uint8 from projections (..., bits): :func:`sign_of` then :func:`pack`, in
    fewer steps (a threshold and numpy's ``packbits`` on a zero-copy view)."""
    bits = (proj > 1e-5 * proj.abs().amax(-1, keepdim=True)).numpy()
    return torch.from_numpy(np.packbits(bits, axis=-1))


def sign_of(proj: Tensor) -> Tensor:
    """+1 where a projection is positive beyond rounding (1e-5 of the largest of its fingerprint), else -1.

    Quantised inputs (8-bit pixels, digits' 17 grey levels) often project to exactly zero, and summation order
    (one folded matrix or step by step, one BLAS or another) turns an exact zero into +-1e-7: without the margin
    such bits would be a coin toss between two implementations."""
    return torch.where(proj > 1e-5 * proj.abs().amax(-1, keepdim=True), 1.0, -1.0)


def distances(probe: Tensor, known: Tensor) -> Tensor:
    """Hamming distances between +-1 fingerprints: ``probe`` (N, S, bits) tried at S offsets, ``known`` (M, bits);
    (N, M), the nearest offset's, by one matrix product."""
    bits = probe.shape[-1]
    agree = probe @ known.T  # (N, S, M): bits - 2 * hamming
    return ((bits - agree.amax(1)) / 2).round().to(torch.int32)


def pack(signs: Tensor) -> Tensor:
    """+-1 fingerprints (..., bits) as bytes (..., bits / 8), the first bit the most significant of the first byte."""
    b = (signs > 0).to(torch.uint8).reshape(*signs.shape[:-1], -1, 8)
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
    return (b * weights).sum(-1).to(torch.uint8)


def unpack(packed: Tensor) -> Tensor:
    """The inverse of :func:`pack`: +-1 float (..., bits)."""
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8)
    bits = (packed[..., None] >> shifts) & 1
    return bits.reshape(*packed.shape[:-1], -1).float() * 2 - 1


def to_hex(signs: Tensor) -> str:
    """A +-1 fingerprint (bits,) as hex (its :func:`pack` bytes)."""
    return bytes(pack(signs).tolist()).hex()


def from_hex(value: str) -> Tensor:
    """The inverse of :func:`to_hex`: a +-1 float tensor (bits,)."""
    return unpack(torch.frombuffer(bytearray(bytes.fromhex(value)), dtype=torch.uint8))


def _round(v: float) -> float:
    return float(f"{v:.6g}")


def _scheme_problems(s: FingerprintScheme) -> list[str]:
    problems = []
    if s.bits not in BITS:
        problems.append(f"bits must be one of {BITS}, got {s.bits}")
    if not s.shape or any(type(d) is not int or d < 1 for d in s.shape) or math.prod(s.shape) > MAX_FEATURES:
        problems.append(f"shape must be positive sizes with at most {MAX_FEATURES} values in all, got {s.shape}")
        return problems
    if len(s.shape) == 3:
        pooled = s.shape[0] * min(s.shape[1], s.grid) * min(s.shape[2], s.grid)
        if pooled * s.bits > MAX_PROJECTION:
            problems.append(
                f"{s.bits} bits over {pooled} pooled values is too large a projection; use fewer bits or a smaller grid"
            )
        if not 0 <= s.margin <= 4 or min(s.shape[1:]) - 2 * s.margin < 2:
            problems.append(f"margin must be 0-4 and leave at least 2 px, got {s.margin} for {s.shape}")
        if not 2 <= s.grid <= 64:
            problems.append(f"grid must be 2-64, got {s.grid}")
        if s.center is not None or s.scale is not None:
            problems.append("image schemes take no center or scale")
    elif len(s.shape) == 1:
        if s.margin:
            problems.append("tabular schemes take no margin")
        d = s.shape[0]
        if d * s.bits > MAX_PROJECTION:
            problems.append(f"{s.bits} bits over {d} features is too large a projection; use fewer bits")
        if s.center is None or s.scale is None or len(s.center) != d or len(s.scale) != d:
            problems.append(f"a tabular scheme needs center and scale of {d} values each")
        elif not all(math.isfinite(v) for v in s.center) or not all(math.isfinite(v) and v > 0 for v in s.scale):
            problems.append("center must be finite and scale finite and positive")
    else:
        problems.append(f"shape must be (C, H, W) images or (D,) rows, got {s.shape}")
    return problems
