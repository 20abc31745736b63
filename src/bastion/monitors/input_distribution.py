"""Input distribution: has what the service is asked moved away from the data the model was built for?

Service-wide (every key's inputs to one model, in arrival order): each ``window`` of inputs is compared with a
reference sample of the model's clean data by an MMD permutation test and by per-feature KS tests with
false-discovery control (``bastion.detectors.drift``); ``consecutive`` drifted windows in a row raise the alert
(each window is tested at ``p_value``, so a long benign stream would otherwise meet one odd window sooner or later:
20 windows of the Fashion-MNIST test set did, at MMD p 0.005). Drift is not an attack, so the alert is informational (it
opens an incident with the retraining playbook and moves no threat level); it names the key that sent most of the
drifted window when one key sent at least half of it.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from bastion.detectors.drift import DriftReference, SlidingWindow
from bastion.errors import InputValidationError
from bastion.monitors.base import Alert, KeyStates, QueryEvent, Severity
from bastion.monitors.registry import MONITORS, MonitorKind, MonitorSettings


@dataclass
class _Count:
    inputs: int = 0


@dataclass
class InputDistributionMonitor:
    """See the module docstring. ``reference``: clean inputs (N, D); a window drifts when the MMD p-value is at
    most ``p_value`` or any feature's KS test is rejected at false-discovery rate ``fdr``."""

    reference: Tensor
    window: int = 500
    p_value: float = 0.005
    fdr: float = 0.001
    permutations: int = 199
    consecutive: int = 2
    background: bool = True
    min_interval_s: float = 5.0
    name: str = "input_distribution"
    max_keys: int = 10_000
    windows_tested: int = 0
    windows_skipped: int = 0  # full windows dropped because the previous one was still being tested
    _keys: KeyStates[_Count] = field(init=False, repr=False)  # inputs per key in the current window

    def __post_init__(self) -> None:
        if self.reference.dim() != 2 or self.reference.shape[0] < 50:
            raise InputValidationError("reference must be (N, D) clean inputs with N >= 50")
        if self.permutations < 1 or self.consecutive < 1 or not 0 < self.p_value < 1 or not 0 < self.fdr < 1:
            raise InputValidationError("permutations and consecutive must be >= 1 and p_value, fdr in (0, 1)")
        self._stream = SlidingWindow(self.reference, self.window)
        # prepared once: each window's test computes only its own side (kernel rows, sorted values)
        self._reference = DriftReference(self.reference, max_inputs=max(self.window, 1000))
        self._keys = KeyStates(self.max_keys)
        self._seed = 0
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future[list[Alert]] | None = None
        self._streak: list[dict[str, float]] = []  # the drifted windows in a row, latest last
        self._last_test: float | None = None  # when the last tested window was full

    def forget(self, key_id: str) -> None:
        """Nothing per key decides a drift alert; the key's share of the current window is dropped."""
        self._keys.pop(key_id)

    def observe(self, event: QueryEvent) -> list[Alert]:
        """With ``background`` (the gateway's way), a full window is tested on a worker thread, off the request's
        path, and its alert comes back with a later request; a window that completes while the previous one is still
        being tested is dropped (counted in ``windows_skipped``), as is one that completes within ``min_interval_s``
        of the last tested one: on a busy service the tests would otherwise run back to back (measured: 11% of the
        gateway's CPU at 400 requests a second), while drift, a lasting change, shows in a window every few seconds."""
        out: list[Alert] = []
        if self._pending is not None and self._pending.done():
            out, self._pending = self._pending.result(), None
        n = int(event.inputs.shape[0])
        self._keys.get_or_create(event.key_id, _Count).inputs += n
        full = self._stream.add(event.inputs)
        if full is None:
            return out
        shares = sorted(((k, c.inputs) for k, c in self._keys.items()), key=lambda kv: -kv[1])
        self._keys.clear()
        self._seed += 1
        if self._last_test is not None and event.time - self._last_test < self.min_interval_s:
            self.windows_skipped += 1  # busy service: a window every few seconds is enough to see drift
            return out
        if not self.background:
            self._last_test = event.time
            return out + self._test(full, shares, self._seed, event.time)
        if self._pending is not None:
            self.windows_skipped += 1
            return out
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="bastion-drift")
        self._pending = self._pool.submit(self._test, full, shares, self._seed, event.time)
        self._last_test = event.time
        return out

    def wait(self) -> list[Alert]:
        """The alerts of the window being tested in the background, once it is done (tests, shutdown)."""
        if self._pending is None:
            return []
        out, self._pending = self._pending.result(), None
        return out

    def _test(self, full: Tensor, shares: list[tuple[str, int]], seed: int, time: float) -> list[Alert]:
        self.windows_tested += 1
        mmd = self._reference.mmd(full, permutations=self.permutations, generator=torch.Generator().manual_seed(seed))
        ks = self._reference.ks(full, fdr=self.fdr, exact_top=5)  # the alert reports the top 5
        if not (mmd.drift(self.p_value) or ks.drift):
            self._streak = []
            return []
        # real drift persists; one odd window in a long benign stream (each tested at p_value) does not
        self._streak = [*self._streak, {"mmd_p_value": mmd.p_value, "features_drifted": float(ks.drifted.sum())}]
        if len(self._streak) < self.consecutive:
            return []
        streak, self._streak = self._streak, []
        total = sum(c for _, c in shares) or 1
        top_key, top_count = shares[0] if shares else (None, 0)
        key = top_key if top_count * 2 >= total else None
        drifted = int(ks.drifted.sum())
        evidence: dict[str, Any] = {
            "window": int(full.shape[0]),
            "mmd2": mmd.mmd2,
            "mmd_p_value": mmd.p_value,
            "features_drifted": drifted,
            "features": int(ks.statistic.numel()),
            "top_features": [{"feature": i, "ks": s, "p_value": p} for i, s, p in ks.top(5)],
            "keys": {k: c for k, c in shares[:5]},
            "windows_skipped": self.windows_skipped,
            "windows_in_a_row": streak,
        }
        return [
            Alert(
                monitor=self.name,
                kind=self.name,
                key_id=key,
                severity=Severity.INFO,
                message=(
                    f"{len(streak)} windows in a row differ from the model's data; the last {full.shape[0]} inputs: "
                    f"MMD p {mmd.p_value:.3g}, "
                    f"{drifted} of {ks.statistic.numel()} features moved at FDR {self.fdr:g}"
                    + (f"; {top_count} of them from key {key}" if key else "")
                ),
                score=float(mmd.mmd2),
                atlas="",  # drift is not an ATLAS technique; the incident's playbook says what to check
                time=time,
                evidence=evidence,
            )
        ]


class InputDistributionSettings(MonitorSettings):
    window: int = Field(500, ge=50)
    reference: int = Field(1000, ge=50, description="clean inputs kept as the reference sample")
    p_value: float = Field(0.005, gt=0, lt=1)
    fdr: float = Field(0.001, gt=0, lt=1)
    permutations: int = Field(199, ge=19, le=100_000)
    consecutive: int = Field(2, ge=1, le=100, description="drifted windows in a row that raise the alert")
    background: bool = Field(True, description="test full windows on a worker thread, off the request path")
    min_interval_s: float = Field(5.0, ge=0, le=3600, description="test at most one window in this many seconds")


def _build(st: InputDistributionSettings, clean: Tensor, probs: Tensor) -> InputDistributionMonitor:
    del probs
    pick = torch.randperm(clean.shape[0], generator=torch.Generator().manual_seed(0))[: st.reference]
    return InputDistributionMonitor(
        clean[pick].flatten(1).float(),
        window=st.window,
        p_value=st.p_value,
        fdr=st.fdr,
        permutations=st.permutations,
        consecutive=st.consecutive,
        background=st.background,
        min_interval_s=st.min_interval_s,
    )


MONITORS.add(
    "input_distribution",
    MonitorKind(
        "input_distribution",
        InputDistributionSettings,
        _build,
        "Input distribution drift",
        (
            "Compare recent inputs with the training data (bastion drift REFERENCE CURRENT gives a report).",
            "If the world changed, collect and label recent data, retrain and re-assess before redeploying.",
            "If one key's inputs caused it, check them for crafted or out-of-domain data.",
        ),
    ),
)
