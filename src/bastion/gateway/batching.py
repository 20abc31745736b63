"""The requests' arithmetic off the event loop, batched across the requests that wait for it.

On the gateway's path a request's networks (the served model on the input and its squeezed copies, the detectors'
autoencoder, the probing monitor's similarity encoder) run in onnxruntime, which releases the GIL; run on the event
loop they still block it, so no other request is parsed, audited or answered meanwhile. :class:`NumericWorker` is
one thread that runs them instead: the loop hands it a request's validated inputs and goes on with other requests
until the result comes back. Requests that arrive while it is busy wait in its queue and are run together as one
batch (one onnxruntime call has a fixed cost of about a third of a one-input call here), then split back per request.
Every input is still screened and every score audited: only where and when the arithmetic runs changes.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from bastion.defenses.ensemble import EnsembleOutput
from bastion.monitors.base import Detection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NumericJob:
    """One request's arithmetic: the served model ``model`` and its screen on the validated inputs ``x``."""

    model: str
    x: Tensor


@dataclass(frozen=True)
class NumericResult:
    """The model's output, every detector's verdict, and the per-input features that monitors prepared (by name)."""

    out: EnsembleOutput
    detections: tuple[Detection, ...]
    prepared: dict[str, Tensor] = field(default_factory=dict)

    def rows(self, start: int, stop: int) -> NumericResult:
        """The result of inputs ``start:stop`` of the batch (every part is per input)."""
        s = slice(start, stop)
        return NumericResult(
            EnsembleOutput(self.out.probs[s], self.out.disagreement[s]),
            tuple(Detection(d.detector, d.scores[s], d.flagged[s], d.fpr) for d in self.detections),
            {k: v[s] for k, v in self.prepared.items()},
        )


Compute = Callable[[Sequence[NumericJob]], list[NumericResult]]
_Item = tuple[NumericJob, "asyncio.Future[NumericResult]", asyncio.AbstractEventLoop]


def _settle(fut: asyncio.Future[NumericResult], result: NumericResult | None, exc: BaseException | None) -> None:
    if fut.done():  # the request was cancelled meanwhile
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)  # type: ignore[arg-type]


class NumericWorker:
    """A thread that runs :class:`NumericJob` s for coroutines, ``max_inputs`` inputs at most per batch.

    ``compute`` runs a batch of jobs (``Gateway.compute``). When a batch of several jobs fails, each is run again on
    its own, so an error belongs to the request that caused it and no other."""

    def __init__(self, compute: Compute, *, max_inputs: int = 64) -> None:
        if max_inputs < 1:
            raise ValueError(f"max_inputs must be >= 1, got {max_inputs}")
        self._compute = compute
        self.max_inputs = max_inputs
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.batches = 0  # how many calls of ``compute`` ran, and over how many jobs: the batching actually achieved
        self.jobs = 0

    def submit(self, job: NumericJob) -> asyncio.Future[NumericResult]:
        """Queue ``job``; the future resolves on the calling coroutine's loop."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the numeric worker is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="bastion-numeric", daemon=True)
                self._thread.start()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[NumericResult] = loop.create_future()
        self._queue.put((job, fut, loop))
        return fut

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, n, stop = [first], int(first[0].x.shape[0]), False
            while n < self.max_inputs:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
                n += int(item[0].x.shape[0])
            self._run_batch(batch)
            if stop:
                return

    def _run_batch(self, batch: list[_Item]) -> None:
        try:
            results: list[Any] = self._compute([job for job, _, _ in batch])
            self.batches += 1
            self.jobs += len(batch)
        except BaseException as exc:  # handed to the waiting request(s), never lost
            if len(batch) > 1:
                for item in batch:
                    self._run_batch([item])
                return
            results = [exc]
        for (_, fut, loop), res in zip(batch, results, strict=True):
            failed = isinstance(res, BaseException)
            try:
                loop.call_soon_threadsafe(_settle, fut, None if failed else res, res if failed else None)
            except RuntimeError:  # that loop is closed (the server stopped): nobody waits for this result
                log.debug("numeric result dropped: its event loop is closed")
