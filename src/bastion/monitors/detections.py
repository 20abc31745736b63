"""Adversarial inputs by the share of a key's inputs its model's input detectors flag.

An input detector flags a fraction ``fpr`` of clean inputs by construction, so one flag says little about a key:
at 5% a benign client sending 1,000 inputs collects about 50. What singles out an attacker is a *share* of flags
that clean traffic does not reach. Per key and detector this monitor keeps the last ``window`` verdicts and raises a
warning when the flagged share is at least ``ratio`` times the detector's false-positive rate *and* improbable under
it (binomial tail below ``p_value``). A request the detectors do not cover (none configured) leaves it silent.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from pydantic import Field
from scipy.stats import binom

from bastion.errors import InputValidationError
from bastion.monitors.base import Alert, KeyStates, QueryEvent, Severity
from bastion.monitors.registry import MONITORS, MonitorKind, MonitorSettings


@dataclass
class _KeyFlags:
    flags: dict[str, deque[bool]] = field(default_factory=dict)
    since_test: int = 0
    alerted_at: int = -1  # inputs seen when the last alert was raised
    inputs: int = 0


@dataclass
class DetectionMonitor:
    """Per-key rate of detector flags against each detector's false-positive rate (see the module docstring)."""

    window: int = 200
    min_inputs: int = 50
    ratio: float = 3.0
    p_value: float = 1e-6
    test_every: int = 10
    name: str = "adversarial_inputs"
    max_keys: int = 10_000
    _keys: KeyStates[_KeyFlags] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        problems = []
        if self.min_inputs > self.window:
            problems.append(f"min_inputs ({self.min_inputs}) must not exceed window ({self.window})")
        if not 0 < self.p_value < 1:
            problems.append(f"p_value must be in (0, 1), got {self.p_value}")
        if self.ratio < 1:
            problems.append(f"ratio must be >= 1, got {self.ratio}")
        if problems:
            raise InputValidationError("; ".join(problems))
        self._keys = KeyStates(self.max_keys)

    def forget(self, key_id: str) -> None:
        self._keys.pop(key_id)

    def observe(self, event: QueryEvent) -> list[Alert]:
        if not event.detections:
            return []
        st = self._keys.get_or_create(event.key_id, _KeyFlags)
        n = int(event.inputs.shape[0])
        for d in event.detections:
            st.flags.setdefault(d.detector, deque(maxlen=self.window)).extend(d.flagged.tolist())
        st.inputs += n
        st.since_test += n
        # one alert per key until its window has turned over completely
        if st.since_test < self.test_every or (st.alerted_at >= 0 and st.inputs - st.alerted_at < self.window):
            return []
        st.since_test = 0
        worst: tuple[float, str, int, int, float] | None = None
        for d in event.detections:
            flags = st.flags[d.detector]
            total, hits = len(flags), sum(flags)
            if total < self.min_inputs or hits < self.ratio * d.fpr * total:
                continue
            p = float(binom.sf(hits - 1, total, d.fpr))
            if p < self.p_value and (worst is None or p < worst[0]):
                worst = (p, d.detector, hits, total, d.fpr)
        if worst is None:
            return []
        p, detector, hits, total, fpr = worst
        st.alerted_at = st.inputs
        return [
            Alert(
                monitor=self.name,
                kind=self.name,
                key_id=event.key_id,
                severity=Severity.WARNING,
                message=(
                    f"the {detector} detector flagged {hits} of the key's last {total} inputs ({hits / total:.0%}; "
                    f"clean inputs: {fpr:.0%}, binomial p {p:.1e})"
                ),
                score=hits / total,
                atlas="AML.T0043",
                time=event.time,
                evidence={
                    "detector": detector,
                    "flagged": hits,
                    "window": total,
                    "fpr": fpr,
                    "p_value": p,
                    "queries": st.inputs,
                },
            )
        ]


class DetectionSettings(MonitorSettings):
    window: int = Field(200, ge=10)
    min_inputs: int = Field(50, ge=10)
    ratio: float = Field(3.0, ge=1)
    p_value: float = Field(1e-6, gt=0, lt=1)


MONITORS.add(
    "adversarial_inputs",
    MonitorKind(
        "adversarial_inputs",
        DetectionSettings,
        lambda st, clean, probs: DetectionMonitor(
            window=st.window, min_inputs=st.min_inputs, ratio=st.ratio, p_value=st.p_value
        ),
        "Adversarial inputs (the input detectors flag an unusual share of a key's inputs)",
        (
            "The key's threat level was raised; its answers follow the level's output policy.",
            "Look up the key's flagged inputs in the audit log (each event carries every detector's scores).",
            "If they are crafted, revoke the key; consider detectors.reject to refuse flagged inputs outright.",
            "Re-assess the model with the attack the inputs resemble before lowering the level.",
        ),
    ),
)
