"""Group commit of audit events: one writer thread commits the events of all requests waiting at that moment in one
transaction, and each request's answer leaves only once its own event is committed.

On a shared PostgreSQL database every append takes the audit table's lock, reads the last link of the hash chain
and commits; replicas queue for that lock. Done per request on the event loop, each wait held every other request
of the replica (the largest share of a replica's time in a profile of the 50-client mix, bench/scale.py). Batched
here, a replica pays the lock, the read and the commit once per batch, and its event loop goes on serving while the
batch commits. SQLite keeps its per-request inline commit (a few tens of microseconds; a thread hop would cost more
than it saves).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from concurrent.futures import Future

from bastion.gateway.store.base import AuditEvent, AuditStore

log = logging.getLogger(__name__)


class AuditWriter:
    """Commits submitted events in batches of at most ``max_batch``, in submission order."""

    def __init__(self, store: AuditStore, max_batch: int = 256) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[AuditEvent, Future[int]] | None] = queue.SimpleQueue()
        self.batches = 0
        self.events = 0
        self._thread = threading.Thread(target=self._run, name="bastion-audit-writer", daemon=True)
        self._thread.start()

    def submit(self, event: AuditEvent) -> Future[int]:
        """Queue ``event``; the future gives its id once committed, or the store's exception."""
        fut: Future[int] = Future()
        self._queue.put((event, fut))
        return fut

    async def append(self, event: AuditEvent) -> int:
        """Commit ``event`` (with whatever else is waiting) without holding the event loop."""
        return await asyncio.wrap_future(self.submit(event))

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            try:
                ids = self.store.append_many([e for e, _ in batch])
            except Exception as exc:  # each request decides what a failed commit means (503, or the spool)
                for _, fut in batch:
                    fut.set_exception(exc)
                continue
            self.batches += 1
            self.events += len(batch)
            for (_, fut), event_id in zip(batch, ids, strict=True):
                fut.set_result(event_id)

    def close(self) -> None:
        """Commit what is queued, then stop."""
        self._queue.put(None)
        self._thread.join(timeout=30.0)
