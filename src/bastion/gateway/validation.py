"""Turn a request body into a validated input batch, or refuse it with a 4xx that says exactly what was wrong.

Checked in order of cost: content type, body size, JSON syntax (NaN and Infinity literals are refused), the
``{"inputs": [...]}`` schema, nesting depth, batch size, element types (numbers only: no strings — not even "0.5" —,
booleans or nulls), a rectangular
shape equal to ``(N, *input_shape)``, finiteness and the model's value bounds. Nothing is clipped: an out-of-range
value is an error, because silently repairing inputs would hide both client bugs and attacks.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import orjson
import torch
from torch import Tensor

from bastion.gateway.errors import GatewayError
from bastion.types import ModelSpec

BOUNDS_TOLERANCE = 1e-6
TOO_DEEP = "the body's JSON is nested too deeply; an input nests only as deep as the model's input shape"


def _refuse_constant(name: str) -> Any:
    raise GatewayError("non_finite", f"inputs contain {name}; every value must be a finite number")


def parse_body(body: bytes, content_type: str | None, max_body_bytes: int) -> dict[str, Any]:
    """Check the content type and size and parse the JSON object."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json":
        raise GatewayError(
            "unsupported_media_type", f"send the body as application/json, got {media or 'no content type'}"
        )
    if len(body) > max_body_bytes:
        raise GatewayError(
            "body_too_large", f"request body exceeds {max_body_bytes} bytes; send fewer inputs per request"
        )
    try:
        data = orjson.loads(body)  # strict and ~5x faster than json; refuses NaN and Infinity literals
    except orjson.JSONDecodeError:
        try:  # the slow parser only to say precisely what was wrong
            data = json.loads(body, parse_constant=_refuse_constant)
        except GatewayError:
            raise
        except RecursionError:
            raise GatewayError("too_deep", TOO_DEEP) from None
        except (UnicodeDecodeError, ValueError) as exc:
            raise GatewayError("malformed_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise GatewayError(
            "bad_schema", f'the body must be a JSON object {{"inputs": [...]}}, got {type(data).__name__}'
        )
    unknown = sorted(set(data) - {"inputs"})
    if unknown:
        raise GatewayError("bad_schema", f"unknown field(s) {unknown}; the body holds only 'inputs'")
    return data


def _find_non_number(value: Any, path: str) -> str | None:
    if isinstance(value, list):
        for i, v in enumerate(value):
            found = _find_non_number(v, f"{path}[{i}]")
            if found:
                return found
        return None
    if isinstance(value, bool) or value is None or not isinstance(value, (int, float)):
        return f"{path} is {json.dumps(value)[:40]}"
    return None


def to_batch(data: dict[str, Any], spec: ModelSpec, max_batch: int, *, raw: bytes = b"") -> Tensor:
    """The ``inputs`` field as a float32 tensor of shape (N, *input_shape) within the model's bounds."""
    try:
        return _to_batch(data, spec, max_batch, raw)
    except RecursionError:  # a ragged batch nested hundreds deep: refuse it rather than fail with a 500
        raise GatewayError("too_deep", TOO_DEEP) from None


def _depth(value: Any) -> int:
    """How deep the first element nests (iteratively: a hostile body cannot exhaust the stack here)."""
    d = 0
    while isinstance(value, list) and value:
        value, d = value[0], d + 1
    return d


def _to_batch(data: dict[str, Any], spec: ModelSpec, max_batch: int, raw: bytes) -> Tensor:
    if "inputs" not in data:
        raise GatewayError("bad_schema", 'the body needs an "inputs" field: a list of inputs (nested lists)')
    inputs = data["inputs"]
    shape = "x".join(str(s) for s in spec.input_shape)
    if not isinstance(inputs, list) or not inputs:
        raise GatewayError("bad_schema", f'"inputs" must be a non-empty list of inputs of shape {shape}')
    if len(inputs) > max_batch:
        raise GatewayError(
            "batch_too_large", f"a request may hold at most {max_batch} inputs, got {len(inputs)}; split it"
        )
    if _depth(inputs) > len(spec.input_shape) + 1:
        raise GatewayError("too_deep", TOO_DEEP)
    # exact walk only when non-numbers may be there: literals, or strings beyond the two quotes of "inputs"
    if raw and (b"true" in raw or b"false" in raw or b"null" in raw or raw.count(b'"') > 2):
        found = _find_non_number(inputs, "inputs")
        if found:
            raise GatewayError("bad_value", f"inputs must hold numbers only: {found}")
    try:
        with np.errstate(over="ignore"):  # overflow to inf is reported below as a non-finite value
            x = torch.from_numpy(np.array(inputs, dtype=np.float32))
    except (TypeError, ValueError, RuntimeError, OverflowError):
        found = _find_non_number(inputs, "inputs")
        detail = found or "the nested lists are ragged (not every input has the same shape)"
        raise GatewayError("bad_value", f"inputs must be a rectangular array of numbers: {detail}") from None
    want = (len(inputs), *spec.input_shape)
    if tuple(x.shape) != want:
        raise GatewayError(
            "bad_shape",
            f"inputs have shape {tuple(x.shape)}, this model takes (N, {', '.join(map(str, spec.input_shape))})",
        )
    low, high = (float(v) for v in torch.aminmax(x))  # one pass; NaN cannot come out of the JSON parsers used
    if not (math.isfinite(low) and math.isfinite(high)):  # finite JSON numbers can still overflow float32 (1e300)
        raise GatewayError("non_finite", "inputs contain values too large for float32; every value must be finite")
    lo, hi = spec.bounds
    if low < lo - BOUNDS_TOLERANCE or high > hi + BOUNDS_TOLERANCE:
        bad = int(((x < lo - BOUNDS_TOLERANCE) | (x > hi + BOUNDS_TOLERANCE)).sum())
        raise GatewayError(
            "out_of_bounds",
            f"{bad} value(s) lie outside the model's input range [{lo:g}, {hi:g}]; scale inputs into it (nothing is "
            "clipped for you)",
        )
    return x
