"""The audit log: one event per request, committed before the response leaves, exportable as JSON lines."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from torch import Tensor

from bastion.gateway.errors import GatewayError
from bastion.gateway.group_commit import AuditWriter
from bastion.gateway.spool import Spool
from bastion.gateway.store.base import AuditEvent, AuditStore


def input_hash(x: Tensor | bytes) -> str:
    """sha256 of the validated float32 inputs (or of the raw body when the request never got that far)."""
    data = x if isinstance(x, bytes) else x.detach().to("cpu").contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()


class AuditLog:
    """Writes events through an AuditStore; a failed write becomes a 503 so no answer goes out unrecorded — or,
    fail-open (``spool``), goes to the local spool first and reaches the store when it is back."""

    def __init__(self, store: AuditStore, spool: Spool | None = None) -> None:
        self.store = store
        self.spool = spool
        self.on_spooled: Callable[[], None] | None = None  # told when an event went to the spool
        self.writer: AuditWriter | None = None  # group commit for asynchronous requests (a shared database)

    def record(self, event: AuditEvent) -> int:
        """The event's id in the store; 0 when it was spooled for later."""
        try:
            return self.store.append(event)
        except Exception as exc:  # any database failure: refuse to answer rather than answer unaudited
            return self._failed(event, exc)

    async def record_async(self, event: AuditEvent) -> int:
        """As :meth:`record`; with a ``writer`` (group commit), committed with other waiting events, off the loop."""
        if self.writer is None:
            return self.record(event)
        try:
            return await self.writer.append(event)
        except Exception as exc:
            return self._failed(event, exc)

    def _failed(self, event: AuditEvent, exc: Exception) -> int:
        if self.spool is not None:
            try:
                self.spool.write("audit", event.to_dict())
                if self.on_spooled is not None:
                    self.on_spooled()
                return 0
            except OSError:
                pass  # the spool failed too: refuse like fail-closed
        raise GatewayError(
            "audit_unavailable", "the audit log could not be written; the request was not served, retry"
        ) from exc

    def record_system(
        self, decision: str, output: dict[str, object], *, now: float, status: int = 200, model: str | None = None
    ) -> int:
        """An event the gateway itself causes (a model refused at start, a degraded mode): no key, no inputs."""
        import uuid

        return self.record(
            AuditEvent(
                time=now,
                request_id=uuid.uuid4().hex,
                key_id=None,
                model=model,
                input_hash=None,
                n_inputs=0,
                decision=decision,
                status=status,
                latency_ms=0.0,
                output=dict(output),
                client="gateway",
            )
        )

    def export(self, path: str | Path, after_id: int = 0) -> int:
        """Write every event after ``after_id`` to ``path`` as JSON lines; returns how many."""
        n = 0
        with Path(path).open("w") as fh:
            for ev in self.store.iter_events(after_id):
                fh.write(json.dumps(ev.to_dict(), separators=(",", ":")) + "\n")
                n += 1
        return n

    def verify(self) -> tuple[int, int, int | None]:
        """Recompute the hash chain: (rows verified, rows from before the chain existed, first broken event id)."""
        from bastion.gateway.store.sql import verify_rows

        return verify_rows(self.store.iter_chain())
