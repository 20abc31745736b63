"""One answered request as a frame on the wire, so every replica's monitors see every replica's traffic.

A replica publishes each :class:`~bastion.monitors.base.QueryEvent` it served (``bastion.gateway.sync``); the
others feed it to their own monitors, so per-key monitor state (a probing key's near-duplicates, an extraction key's
query distances) is the same on every replica and an attacker spreading queries round-robin over N replicas is
flagged after as many queries as against one.

The frame is a JSON header and the tensors' raw bytes: no pickle, so a frame read from Redis can hold nothing but
numbers, and :func:`decode` checks every shape, dtype and length before it builds a tensor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch

from bastion.monitors.base import Detection, QueryEvent

VERSION = 1
_DTYPES = {"float32": torch.float32, "int64": torch.int64, "bool": torch.bool, "uint8": torch.uint8}
MAX_FRAME_BYTES = 64 * 1024 * 1024


class FrameError(ValueError):
    """A frame that is not one this version wrote: it is dropped, never half-applied."""


@dataclass(frozen=True)
class Observation:
    """A served request as another replica sees it: the event, who served it and its number there."""

    event: QueryEvent
    origin: str  # the replica that served it
    seq: int  # its number among that replica's observations
    assessment: bool = False
    client: str | None = None
    fingerprints: dict[str, str] | None = None  # per prepared feature: a digest of the function that made it

    @property
    def event_id(self) -> str:
        return f"{self.origin}:{self.seq}"


def _dtype_name(t: torch.Tensor) -> str:
    for name, dt in _DTYPES.items():
        if t.dtype is dt:
            return name
    raise FrameError(f"cannot send a tensor of dtype {t.dtype}")


def encode(obs: Observation) -> bytes:
    """The frame: ``len(header)`` as 8 ASCII hex digits, the JSON header, then each tensor's bytes in order."""
    e = obs.event
    tensors: list[tuple[str, torch.Tensor]] = [("inputs", e.inputs), ("probs", e.probs), ("labels", e.labels)]
    for i, d in enumerate(e.detections):
        tensors += [(f"det{i}.scores", d.scores), (f"det{i}.flagged", d.flagged)]
    tensors += [(f"prep.{name}", t) for name, t in e.prepared.items()]
    blobs, specs = [], []
    for name, t in tensors:
        t = t.detach().contiguous().cpu()
        if t.dtype is torch.float64:
            t = t.float()
        specs.append([name, _dtype_name(t), list(t.shape)])
        blobs.append(t.numpy().tobytes())
    header = {
        "v": VERSION,
        "origin": obs.origin,
        "seq": obs.seq,
        "key_id": e.key_id,
        "model": e.model,
        "time": e.time,
        "assessment": obs.assessment,
        "client": obs.client,
        "detections": [{"detector": d.detector, "fpr": d.fpr} for d in e.detections],
        "fingerprints": obs.fingerprints or {},
        "tensors": specs,
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    return f"{len(head):08x}".encode() + head + b"".join(blobs)


def origin_of(frame: bytes) -> str | None:
    """The replica that wrote ``frame``, read from its header alone (a replica skips its own frames without
    copying their tensors); None when the header is unreadable (:func:`decode` then says why)."""
    try:
        n = int(frame[:8], 16)
        origin = json.loads(frame[8 : 8 + n]).get("origin")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return None
    return origin if isinstance(origin, str) else None


def decode(frame: bytes) -> Observation:
    """Read a frame written by :func:`encode`; :class:`FrameError` for anything else."""
    if len(frame) > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {len(frame)} bytes exceeds {MAX_FRAME_BYTES}")
    try:
        n = int(frame[:8], 16)
        header: dict[str, Any] = json.loads(frame[8 : 8 + n])
    except (ValueError, UnicodeDecodeError) as e:
        raise FrameError(f"unreadable frame header: {e}") from None
    if not isinstance(header, dict) or header.get("v") != VERSION:
        raise FrameError(f"frame version {header.get('v') if isinstance(header, dict) else None!r}, expected {VERSION}")
    try:
        pos, tensors = 8 + n, {}
        for name, dtype, shape in header["tensors"]:
            dt = _DTYPES[dtype]
            if not all(isinstance(s, int) and s >= 0 for s in shape):
                raise FrameError(f"bad shape {shape!r} for {name}")
            count = 1
            for s in shape:
                count *= s
            size = count * torch.empty((), dtype=dt).element_size()
            if pos + size > len(frame):
                raise FrameError(f"frame ends inside tensor {name}")
            raw = bytearray(frame[pos : pos + size])
            tensors[str(name)] = (
                torch.frombuffer(raw, dtype=dt).reshape(shape) if size else torch.empty(shape, dtype=dt)
            )
            pos += size
        if pos != len(frame):
            raise FrameError(f"{len(frame) - pos} bytes after the last tensor")
        detections = tuple(
            Detection(str(d["detector"]), tensors[f"det{i}.scores"], tensors[f"det{i}.flagged"], float(d["fpr"]))
            for i, d in enumerate(header["detections"])
        )
        prepared = {k[len("prep.") :]: v for k, v in tensors.items() if k.startswith("prep.")}
        event = QueryEvent(
            str(header["key_id"]),
            str(header["model"]),
            float(header["time"]),
            tensors["inputs"],
            tensors["probs"],
            tensors["labels"],
            detections,
            prepared,
        )
        rows = {int(t.shape[0]) for k, t in tensors.items() if t.dim()}
        if len(rows) != 1:
            raise FrameError(f"tensors disagree on the number of inputs: {sorted(rows)}")
        client = header.get("client")
        return Observation(
            event,
            str(header["origin"]),
            int(header["seq"]),
            bool(header.get("assessment", False)),
            None if client is None else str(client),
            {str(k): str(v) for k, v in dict(header.get("fingerprints") or {}).items()},
        )
    except FrameError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise FrameError(f"malformed frame: {e!r}") from None
