"""The numeric worker: requests' networks off the event loop, batched, each request getting its own rows back."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence

import pytest
import torch
from tests.gateway.conftest import Env

from bastion.data import Dataset
from bastion.gateway.batching import NumericJob, NumericResult, NumericWorker
from bastion.gateway.pipeline import CANCELLED_STATUS, PredictRequest


class _Gate:
    """Wraps a compute function: the first call waits until ``open()``, so later jobs pile up in the queue."""

    def __init__(self, compute: Callable[[Sequence[NumericJob]], list[NumericResult]]) -> None:
        self.compute, self.sizes = compute, []  # type: ignore[var-annotated]
        self.entered, self.released = threading.Event(), threading.Event()

    def __call__(self, jobs: Sequence[NumericJob]) -> list[NumericResult]:
        self.entered.set()
        self.released.wait(10)
        self.sizes.append(len(jobs))
        return self.compute(jobs)


async def _after_entered(gate: _Gate) -> None:
    while not gate.entered.is_set():
        await asyncio.sleep(0.005)


def test_waiting_jobs_run_as_one_batch_and_each_gets_its_own_rows(env: Env, digits: Dataset) -> None:
    gw = env.gateway
    gate = _Gate(gw.compute)
    worker = NumericWorker(gate)
    xs = [digits.x_test[i : i + n] for i, n in ((0, 1), (1, 3), (4, 2), (6, 1), (7, 5))]

    async def run() -> list[NumericResult]:
        first = worker.submit(NumericJob("digits", xs[0]))
        await _after_entered(gate)  # the worker is busy with the first job: the others queue behind it
        rest = [worker.submit(NumericJob("digits", x)) for x in xs[1:]]
        gate.released.set()
        return [await first, *[await f for f in rest]]

    try:
        got = asyncio.run(run())
    finally:
        worker.close()
    assert gate.sizes == [1, 4]  # the four that waited ran together
    for x, res in zip(xs, got, strict=True):
        alone = gw.compute([NumericJob("digits", x)])[0]
        assert res.out.probs.shape == (x.shape[0], 10)
        assert torch.allclose(res.out.probs, alone.out.probs, atol=1e-5)


def test_a_failing_job_fails_only_its_own_request(env: Env, digits: Dataset) -> None:
    gw = env.gateway

    def compute(jobs: Sequence[NumericJob]) -> list[NumericResult]:
        if any(j.model == "broken" for j in jobs):
            raise RuntimeError("broken model")
        return gw.compute(jobs)

    gate = _Gate(compute)
    worker = NumericWorker(gate)

    async def run() -> list[NumericResult | BaseException]:
        first = worker.submit(NumericJob("digits", digits.x_test[:1]))
        await _after_entered(gate)
        rest = [worker.submit(NumericJob(m, digits.x_test[:2])) for m in ("digits", "broken", "digits")]
        gate.released.set()
        return list(await asyncio.gather(first, *rest, return_exceptions=True))

    try:
        got = asyncio.run(run())
    finally:
        worker.close()
    assert [type(r).__name__ for r in got] == ["NumericResult", "NumericResult", "RuntimeError", "NumericResult"]
    assert gate.sizes == [1, 3, 1, 1, 1]  # the batch of three failed, so each was run again alone
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(_submit(worker, NumericJob("digits", digits.x_test[:1])))


async def _submit(worker: NumericWorker, job: NumericJob) -> NumericResult:
    return await worker.submit(job)


def test_async_predict_answers_and_audits_exactly_as_predict(make_env: Callable[..., Env], digits: Dataset) -> None:
    env = make_env(monitors=True)
    gw = env.gateway
    body = ('{"inputs": ' + str(digits.x_test[:3].tolist()) + "}").encode()
    sync = gw.predict(PredictRequest(env.scores, "digits", body, "application/json"))
    async_ = asyncio.run(gw.predict_async(PredictRequest(env.scores, "digits", body, "application/json")))
    assert async_.labels == sync.labels and async_.release == sync.release
    assert torch.allclose(torch.tensor(async_.scores), torch.tensor(sync.scores), atol=1e-5)
    events = list(gw.store.iter_events())[-2:]
    assert [e.decision for e in events] == ["answered", "answered"]
    a, b = (e.output["detectors"] for e in events)
    assert sorted(a) == sorted(b) == ["feature-squeezing", "mahalanobis", "reconstruction"]
    for name in a:
        assert a[name] == pytest.approx(b[name], abs=1e-4)
    # the monitors read the features the worker prepared in the model's one graph call, equal to their own
    screen = gw.screens["digits"]
    assert screen.compiled_for(gw.models["digits"])
    # (digits' 8x8 similarity encoder does not export to ONNX: it keeps its own call, and the rest still fuse)
    assert {name for name, _ in screen._fused.riders} == {"extraction", "known_inputs"}
    x = digits.x_test[:3]
    prepared = gw.compute([NumericJob("digits", x)])[0].prepared
    for m in gw.monitors["digits"]:
        if hasattr(m, "prepare"):
            want = m.prepare(x.flatten(1))
            assert prepared[m.name].shape == want.shape
            if want.dtype == torch.uint8:
                assert torch.equal(prepared[m.name], want)
            else:
                assert torch.allclose(prepared[m.name], want, atol=1e-5)


def test_a_request_cancelled_while_its_networks_wait_is_audited(env: Env, digits: Dataset) -> None:
    gw = env.gateway
    gate = _Gate(gw.compute)
    gw.numeric = NumericWorker(gate)
    body = ('{"inputs": ' + str(digits.x_test[:1].tolist()) + "}").encode()
    before = len(list(gw.store.iter_events()))

    async def run() -> None:
        task = asyncio.create_task(gw.predict_async(PredictRequest(env.scores, "digits", body, "application/json")))
        await _after_entered(gate)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.released.set()

    asyncio.run(run())
    events = list(gw.store.iter_events())[before:]
    assert [(e.decision, e.status) for e in events] == [("cancelled", CANCELLED_STATUS)]
    assert events[0].key_id is not None and events[0].n_inputs == 1
