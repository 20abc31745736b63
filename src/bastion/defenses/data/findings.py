"""What a data check found: one :class:`Finding` per check and problem, with the training rows it concerns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    """One problem (or a clean bill) from one check.

    ``indices`` are rows of the training split; ``scores`` (same order, may be empty) say how strongly each row is
    implicated, in the check's own unit (``unit``). ``removable`` rows are what cleaning may drop or quarantine:
    a class imbalance is reported but never "fixed" by deleting data."""

    check: str
    severity: str
    message: str
    indices: tuple[int, ...] = ()
    scores: tuple[float, ...] = ()
    unit: str = ""
    removable: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")
        if self.scores and len(self.scores) != len(self.indices):
            raise ValueError("scores must match indices one to one")

    @property
    def count(self) -> int:
        return len(self.indices)

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "severity": self.severity,
            "message": self.message,
            "count": self.count,
            "indices": list(self.indices),
            "scores": [round(s, 6) for s in self.scores],
            "unit": self.unit,
            "removable": self.removable,
            "details": self.details,
        }
