"""What the gateway tells a monitor about each request, and what a monitor says back.

Monitors are streaming and stateful: the gateway feeds every answered request to each monitor, and a monitor returns
the alerts that request triggered. They sit below the gateway (they never import it), so the same monitor can watch
a log replay, a test, or a live service.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Generic, Protocol, TypeVar

from torch import Tensor


class Severity(IntEnum):
    """How much an alert should move a key's threat level."""

    INFO = 0
    WARNING = 1
    CRITICAL = 2


@dataclass(frozen=True)
class Detection:
    """What one input detector (``bastion.detectors``) said about a request's inputs: ``scores`` (N,), higher is more
    suspicious, ``flagged`` (N,) bool (score above its threshold), and ``fpr``, the false-positive rate its threshold
    was set at on clean held-out data, so a monitor can tell an unusual share of flags from the expected one."""

    detector: str
    scores: Tensor
    flagged: Tensor
    fpr: float


@dataclass(frozen=True)
class QueryEvent:
    """One answered request: who asked, what, and what the model said.

    ``inputs`` are the validated inputs flattened to (N, D) float32 in the model's input space; ``probs`` the model's
    unmodified probabilities (N, K); ``labels`` their argmax (N,); ``detections`` the served model's input
    detectors' verdicts on the inputs (empty where none are configured); ``prepared`` what monitors' optional
    ``prepare`` computed from these inputs, by monitor name (the gateway runs it off its event loop, batched).
    """

    key_id: str
    model: str
    time: float
    inputs: Tensor
    probs: Tensor
    labels: Tensor
    detections: tuple[Detection, ...] = ()
    prepared: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Alert:
    """A monitor's finding about one key (or the whole service when ``key_id`` is None)."""

    monitor: str
    kind: str
    key_id: str | None
    severity: Severity
    message: str
    score: float
    atlas: str
    time: float
    evidence: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Alert:
        """The inverse of :meth:`to_dict` (an alert another replica published, or one read back from a spool)."""
        return cls(
            str(d["monitor"]),
            str(d["kind"]),
            None if d.get("key_id") is None else str(d["key_id"]),
            Severity[str(d["severity"]).upper()],
            str(d["message"]),
            float(d["score"]),
            str(d["atlas"]),
            float(d["time"]),
            dict(d.get("evidence") or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "kind": self.kind,
            "key_id": self.key_id,
            "severity": self.severity.name.lower(),
            "message": self.message,
            "score": self.score,
            "atlas": self.atlas,
            "time": self.time,
            "evidence": self.evidence,
        }


class Monitor(Protocol):
    """Streaming detector over the gateway's traffic."""

    name: str

    def observe(self, event: QueryEvent) -> list[Alert]: ...

    # Optional: ``prepare(inputs: Tensor) -> Tensor``, per-input features computed from the (N, D) inputs alone
    # (a network's embedding, say). The gateway runs it with the model, off its event loop and batched across
    # requests, and hands the result to ``observe`` as ``event.prepared[name]``; ``observe`` must compute the same
    # thing itself when it is absent. With ``prepare`` a monitor may also offer ``prepare_module(input_shape) ->
    # nn.Module | None``, the same features as a traceable module over inputs (N, *input_shape) -> (N, F) that the
    # gateway compiles into the model's graph, and, where that output is not already what ``prepare`` returns,
    # ``finish_prepared(raw, inputs) -> Tensor``, which turns it into that.

    def forget(self, key_id: str) -> None:
        """Drop everything kept about ``key_id``: after its level decays or is reset (so the monitor re-arms and a
        key that attacks again is caught again) and when the key is revoked."""
        ...


S = TypeVar("S")


class KeyStates(Generic[S]):
    """Per-key monitor state for at most ``max_keys`` keys, least recently seen evicted first.

    Bounds a monitor's memory however many keys a service has (a probing history is ~0.5 MB per key); a key that
    has been quiet longest loses its history first.
    """

    def __init__(self, max_keys: int = 10_000) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys}")
        self.max_keys = max_keys
        self._states: OrderedDict[str, S] = OrderedDict()

    def get(self, key_id: str) -> S | None:
        return self._states.get(key_id)

    def get_or_create(self, key_id: str, factory: Callable[[], S]) -> S:
        st = self._states.get(key_id)
        if st is None:
            st = self._states[key_id] = factory()
            while len(self._states) > self.max_keys:
                self._states.popitem(last=False)
        else:
            self._states.move_to_end(key_id)
        return st

    def pop(self, key_id: str) -> None:
        self._states.pop(key_id, None)

    def items(self) -> list[tuple[str, S]]:
        return list(self._states.items())

    def clear(self) -> None:
        self._states.clear()

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._states

    def __getitem__(self, key_id: str) -> S:
        return self._states[key_id]

    def __len__(self) -> int:
        return len(self._states)
