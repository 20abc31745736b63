"""Prediction-confidence analysis: does a key's confidence distribution look like the model's normal traffic?"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch
from pydantic import Field
from scipy.special import kolmogorov
from scipy.stats import ks_2samp
from torch import Tensor

from bastion.errors import InputValidationError
from bastion.monitors.base import Alert, KeyStates, QueryEvent, Severity
from bastion.monitors.registry import MONITORS, MonitorKind, MonitorSettings

_GATE = 1_000.0  # how far above the threshold an asymptotic p-value still gets scipy's exact test


@dataclass
class _KeyWindow:
    values: deque[float]
    since_test: int = 0
    alerted: bool = False
    queries: int = 0


@dataclass
class ConfidenceMonitor:
    """Compare each key's recent top-1 confidences with the model's confidences on its own clean data (two-sample KS).

    Inputs crafted near a decision boundary (evasion searches, boundary-walking extraction) and inputs off the data
    manifold draw confidences unlike natural traffic; a KS test over the last ``window`` answers flags a key whose
    distribution differs at significance ``p_value``. One alert per key until its window has fully turned over.

    scipy's ``ks_2samp`` costs about 1 ms in Python on the gateway's event loop, so the statistic is computed first
    against the sorted baseline (two binary searches) and scipy is asked for the exact p-value only when the
    asymptotic one is within a factor ``_GATE`` of the threshold: the decision and the p-value are scipy's whenever
    the test could reject.
    """

    baseline: Tensor
    window: int = 200
    min_queries: int = 100
    p_value: float = 1e-6
    test_every: int = 25
    name: str = "confidence"
    max_keys: int = 10_000
    _keys: KeyStates[_KeyWindow] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.baseline, Tensor) or self.baseline.dim() != 1 or self.baseline.numel() < 20:
            raise InputValidationError("baseline must be a 1-D tensor of at least 20 top-1 confidences")
        self._base = np.sort(self.baseline.double().numpy())
        self._keys = KeyStates(self.max_keys)

    def _statistic(self, recent: np.ndarray) -> float:
        """The two-sample KS statistic of ``recent`` against the baseline. Between consecutive points of ``recent``
        its ECDF is constant and the baseline's is monotone, so the supremum is reached at a point of ``recent``, from
        the left or the right."""
        r = np.sort(recent)
        n, m = r.size, self._base.size
        right = np.searchsorted(self._base, r, side="right") / m
        left = np.searchsorted(self._base, r, side="left") / m
        mine_right = np.searchsorted(r, r, side="right") / n
        mine_left = np.searchsorted(r, r, side="left") / n
        return float(max(np.abs(mine_right - right).max(), np.abs(mine_left - left).max()))

    def _may_reject(self, recent: np.ndarray) -> bool:
        """False only when the asymptotic p-value is above ``_GATE`` times the threshold, far beyond any gap
        between it and the exact one at these sample sizes."""
        n, m = recent.size, self._base.size
        en = n * m / (n + m)
        return float(kolmogorov(math.sqrt(en) * self._statistic(recent))) < _GATE * self.p_value

    @classmethod
    def from_probabilities(cls, probs: Tensor, **kwargs: object) -> ConfidenceMonitor:
        return cls(probs.max(1).values.detach().cpu(), **kwargs)  # type: ignore[arg-type]

    def forget(self, key_id: str) -> None:
        """Drop the key's history: the monitor re-arms for it."""
        self._keys.pop(key_id)

    def observe(self, event: QueryEvent) -> list[Alert]:
        st = self._keys.get_or_create(event.key_id, lambda: _KeyWindow(deque(maxlen=self.window)))
        conf = event.probs.max(1).values.tolist()
        st.values.extend(conf)
        st.since_test += len(conf)
        st.queries += len(conf)
        if st.alerted:
            if st.since_test >= self.window:
                st.alerted, st.since_test = False, 0
            return []
        if len(st.values) < self.min_queries or st.since_test < self.test_every:
            return []
        st.since_test = 0
        recent = np.fromiter(st.values, dtype=np.float64, count=len(st.values))
        if not self._may_reject(recent):
            return []
        result = ks_2samp(recent, self._base)
        p = float(result.pvalue)
        if p >= self.p_value:
            return []
        st.alerted = True
        return [
            Alert(
                monitor=self.name,
                kind="confidence",
                key_id=event.key_id,
                severity=Severity.WARNING,
                message=(
                    f"confidence of the last {len(recent)} answers differs from the model's normal traffic "
                    f"(KS {float(result.statistic):.3f}, p {p:.1e}; median {float(torch.tensor(recent).median()):.3f} "
                    f"vs {float(self.baseline.median()):.3f})"
                ),
                score=float(result.statistic),
                atlas="AML.T0043",
                time=event.time,
                evidence={"ks": float(result.statistic), "p_value": p, "window": len(recent), "queries": st.queries},
            )
        ]


class ConfidenceSettings(MonitorSettings):
    window: int = Field(200, ge=20)
    min_queries: int = Field(100, ge=20)
    p_value: float = Field(1e-6, gt=0, lt=1)


MONITORS.add(
    "confidence",
    MonitorKind(
        "confidence",
        ConfidenceSettings,
        lambda st, clean, probs: ConfidenceMonitor.from_probabilities(
            probs, window=st.window, min_queries=st.min_queries, p_value=st.p_value
        ),
        "Unusual prediction confidence (inputs off the model's data)",
        (
            "Compare the key's inputs with the training data: drift, a new client, or crafted inputs.",
            "If crafted, treat as probing; if drift, schedule re-training and re-assessment.",
        ),
    ),
)
