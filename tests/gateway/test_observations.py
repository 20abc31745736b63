"""Observation frames: what one replica's monitors tell the others. A frame round-trips exactly, and anything that is
not a frame this version wrote is refused whole (it comes from Redis, which other software can write to)."""

from __future__ import annotations

import pytest
import torch

from bastion.gateway.observations import FrameError, Observation, decode, encode
from bastion.monitors.base import Detection, QueryEvent


def _obs(n: int = 3) -> Observation:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 64, generator=g)
    probs = torch.softmax(torch.randn(n, 10, generator=g), 1)
    det = Detection("mahalanobis", torch.rand(n, generator=g), torch.tensor([True, False, True][:n]), 0.01)
    event = QueryEvent("k1", "digits", 1234.5, x, probs, probs.argmax(1), (det,), {"probing": torch.randn(n, 32)})
    return Observation(event, "replica-a", 7, assessment=True, client="10.0.0.1", fingerprints={"probing": "ab12"})


def test_a_frame_round_trips_exactly() -> None:
    obs = _obs()
    back = decode(encode(obs))
    assert (back.origin, back.seq, back.assessment, back.client, back.fingerprints) == (
        "replica-a",
        7,
        True,
        "10.0.0.1",
        {"probing": "ab12"},
    )
    assert back.event_id == "replica-a:7"
    e, b = obs.event, back.event
    assert (b.key_id, b.model, b.time) == (e.key_id, e.model, e.time)
    for x, y in (
        (e.inputs, b.inputs),
        (e.probs, b.probs),
        (e.labels, b.labels),
        (e.prepared["probing"], b.prepared["probing"]),
    ):
        assert x.dtype == y.dtype and torch.equal(x, y)
    (d,) = b.detections
    assert d.detector == "mahalanobis" and d.fpr == 0.01 and torch.equal(d.flagged, e.detections[0].flagged)
    assert torch.equal(d.scores, e.detections[0].scores)


def _corrupt_header(frame: bytes, edit: dict[str, object]) -> bytes:
    import json

    n = int(frame[:8], 16)
    header = {**json.loads(frame[8 : 8 + n]), **edit}
    head = json.dumps(header).encode()
    return f"{len(head):08x}".encode() + head + frame[8 + n :]


@pytest.mark.parametrize(
    "mangle",
    [
        lambda f: f[:-4],  # truncated inside the last tensor
        lambda f: f + b"\0\0\0\0",  # bytes after the last tensor
        lambda f: b"zzzzzzzz" + f[8:],  # no header length
        lambda f: f[:8] + b"{not json" + f[17:],
        lambda f: _corrupt_header(f, {"v": 99}),
        lambda f: _corrupt_header(f, {"tensors": [["inputs", "object", [3, 64]]]}),
        lambda f: _corrupt_header(f, {"tensors": [["inputs", "float32", [-3, 64]]]}),
        lambda f: _corrupt_header(f, {"detections": [{"detector": "x", "fpr": 0.1}] * 2}),
        lambda f: _corrupt_header(f, {"key_id": None, "tensors": "x"}),
    ],
    ids=["truncated", "trailing", "no-length", "bad-json", "version", "dtype", "shape", "detections", "types"],
)
def test_anything_else_is_refused_whole(mangle) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FrameError):
        decode(mangle(encode(_obs())))


def test_tensors_that_disagree_on_the_number_of_inputs_are_refused() -> None:
    obs = _obs()
    e = obs.event
    bad = Observation(QueryEvent(e.key_id, e.model, e.time, e.inputs, e.probs[:2], e.labels), "r", 1)
    with pytest.raises(FrameError, match="disagree"):
        decode(encode(bad))


def test_the_bus_drops_a_junk_frame_and_goes_on_feeding_real_ones() -> None:
    """Real Redis: junk on the observations channel is counted and skipped; a frame from another replica reaches
    the monitors' callback; this replica's own frames do not come back to it."""
    import time
    import uuid

    import redis

    from bastion.gateway.sync import StateBus

    seen: list[Observation] = []
    bus = StateBus("redis://127.0.0.1:6379/0", f"bastion-test-{uuid.uuid4().hex[:8]}", lambda e: None, seen.append)
    try:
        r = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        r.publish(bus.observations, b"\x80not a frame")
        own = _obs()
        bus.publish_observation(encode(Observation(own.event, bus.replica, 1)))  # echoed by Redis, ignored
        r.publish(bus.observations, encode(_obs()))
        end = time.monotonic() + 5
        while time.monotonic() < end and not seen:
            time.sleep(0.02)
        assert [o.origin for o in seen] == ["replica-a"]
        assert bus.status()["dropped"] == 1 and bus.status()["observed"] == 1
        assert bus.claim("x:1:probing:probing:k1") and not bus.claim("x:1:probing:probing:k1")  # first claim wins
    finally:
        bus.close()
