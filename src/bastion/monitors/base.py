"""What the gateway tells a monitor about each request, and what a monitor says back.

Monitors are streaming and stateful: the gateway feeds every answered request to each monitor, and a monitor returns
the alerts that request triggered. They sit below the gateway (they never import it), so the same monitor can watch
a log replay, a test, or a live service.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Protocol

from torch import Tensor


class Severity(IntEnum):
    """How much an alert should move a key's threat level."""

    INFO = 0
    WARNING = 1
    CRITICAL = 2


@dataclass(frozen=True)
class QueryEvent:
    """One answered request: who asked, what, and what the model said.

    ``inputs`` are the validated inputs flattened to (N, D) float32 in the model's input space; ``probs`` the model's
    unmodified probabilities (N, K); ``labels`` their argmax (N,).
    """

    key_id: str
    model: str
    time: float
    inputs: Tensor
    probs: Tensor
    labels: Tensor


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
