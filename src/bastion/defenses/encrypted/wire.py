"""How encrypted queries and answers travel as bytes (an HTTP body): a small header, then the ciphertexts.

    b"BSTNHE1\\n" | 4-byte big-endian header length | header (JSON: kind, regime, context_id, n, sizes) | ciphertexts

JSON would base64 every ciphertext (a third more bytes for a 100 MB batch); this format carries them as they are.
Unpacking checks every length against the body before slicing, so a malformed or hostile body gets a clear error,
never an oversized allocation.
"""

from __future__ import annotations

import json
import struct
from typing import Literal

from bastion.defenses.encrypted.client import EncryptedAnswer, EncryptedQuery
from bastion.errors import InputValidationError

MAGIC = b"BSTNHE1\n"
MAX_HEADER = 1 << 20
MAX_CIPHERTEXTS = 65_536


def _pack(kind: str, regime: str, context_id: str, n: int, cts: tuple[bytes, ...], seconds: float) -> bytes:
    header = json.dumps(
        {
            "kind": kind,
            "regime": regime,
            "context_id": context_id,
            "n": n,
            "sizes": [len(c) for c in cts],
            "seconds": round(seconds, 6),
        },
        separators=(",", ":"),
    ).encode()
    return b"".join([MAGIC, struct.pack(">I", len(header)), header, *cts])


def _unpack(body: bytes, kind: str) -> tuple[dict[str, object], tuple[bytes, ...]]:
    if not body.startswith(MAGIC) or len(body) < len(MAGIC) + 4:
        raise InputValidationError(
            f"an encrypted {kind} must start with {MAGIC!r} (made by bastion.defenses.encrypted.wire); got other bytes"
        )
    (hlen,) = struct.unpack(">I", body[len(MAGIC) : len(MAGIC) + 4])
    start = len(MAGIC) + 4
    if hlen > MAX_HEADER or start + hlen > len(body):
        raise InputValidationError(f"the encrypted {kind}'s header length {hlen} does not fit the body")
    try:
        header = json.loads(body[start : start + hlen])
    except ValueError as e:
        raise InputValidationError(f"the encrypted {kind}'s header is not JSON: {e}") from None
    if not isinstance(header, dict) or header.get("kind") != kind:
        raise InputValidationError(f"this body is not an encrypted {kind}")
    sizes = header.get("sizes")
    if (
        not isinstance(sizes, list)
        or not 0 < len(sizes) <= MAX_CIPHERTEXTS
        or not all(isinstance(s, int) and s > 0 for s in sizes)
    ):
        raise InputValidationError(f"the encrypted {kind}'s header lists no valid ciphertext sizes")
    offset = start + hlen
    if offset + sum(sizes) != len(body):
        raise InputValidationError(
            f"the encrypted {kind} declares {sum(sizes):,} bytes of ciphertext but carries {len(body) - offset:,}"
        )
    cts = []
    for s in sizes:
        cts.append(body[offset : offset + s])
        offset += s
    if header.get("regime") not in ("batch", "single"):
        raise InputValidationError(f"unknown packing {header.get('regime')!r}; use batch or single")
    n = header.get("n")
    if not isinstance(n, int) or n < 1:
        raise InputValidationError("the encrypted body's n (inputs) must be a positive integer")
    if not isinstance(header.get("context_id"), str):
        raise InputValidationError("the encrypted body names no context_id")
    return header, tuple(cts)


def pack_query(q: EncryptedQuery) -> bytes:
    return _pack("query", q.regime, q.context_id, q.n, q.ciphertexts, q.seconds)


def unpack_query(body: bytes) -> EncryptedQuery:
    h, cts = _unpack(body, "query")
    regime: Literal["batch", "single"] = "batch" if h["regime"] == "batch" else "single"
    return EncryptedQuery(regime, str(h["context_id"]), _int(h["n"]), cts)


def pack_answer(a: EncryptedAnswer) -> bytes:
    return _pack("answer", a.regime, a.context_id, a.n, a.ciphertexts, a.seconds)


def unpack_answer(body: bytes) -> EncryptedAnswer:
    h, cts = _unpack(body, "answer")
    regime: Literal["batch", "single"] = "batch" if h["regime"] == "batch" else "single"
    seconds = h.get("seconds")
    return EncryptedAnswer(
        regime,
        str(h["context_id"]),
        _int(h["n"]),
        cts,
        float(seconds) if isinstance(seconds, (int, float)) else 0.0,
    )


def _int(v: object) -> int:
    if not isinstance(v, int):  # _unpack checked it already; this keeps the types honest
        raise InputValidationError("n must be an integer")
    return v
