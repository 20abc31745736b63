"""Query-pattern analysis per key: model extraction (PRADA) and adversarial probing (stateful k-NN detection)."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import torch
from pydantic import Field
from scipy.stats import shapiro
from torch import Tensor

from bastion.errors import InputValidationError
from bastion.monitors._distance import pairwise, project
from bastion.monitors.base import Alert, KeyStates, QueryEvent, Severity
from bastion.monitors.registry import MONITORS, MonitorKind, MonitorSettings


@dataclass
class _PradaState:
    growing: dict[int, Tensor] = field(default_factory=dict)  # per class: the kept queries (M, D)
    kept_dists: dict[int, list[float]] = field(default_factory=dict)  # per class: count, sum, sum of squares
    thresholds: dict[int, float] = field(default_factory=dict)
    dists: list[float] = field(default_factory=list)
    since_test: int = 0
    alerted: bool = False
    queries: int = 0


@dataclass
class ExtractionMonitor:
    """PRADA: the minimum distances between a key's successive queries are roughly normal for natural inputs.

    For each query, the distance to the nearest earlier query of the same predicted class is recorded; queries far
    from everything kept so far join the kept set (with a threshold that adapts to the key's own spread). Synthetic
    extraction queries — Jacobian augmentation, random perturbations of a few seeds — make that distance
    distribution strongly non-normal, and a Shapiro-Wilk statistic W below ``threshold`` flags the key.

    Paper: Juuti, Szyller, Marchal & Asokan, "PRADA: protecting against DNN model stealing attacks", EuroS&P 2019.
    """

    threshold: float = 0.85
    min_queries: int = 100
    max_history: int = 5_000
    max_kept: int = 500
    test_every: int = 10
    dim: int = 128
    name: str = "extraction"
    max_keys: int = 10_000
    _keys: KeyStates[_PradaState] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise InputValidationError(f"threshold must be in (0, 1), got {self.threshold}")
        self._keys = KeyStates(self.max_keys)

    def _feed(self, st: _PradaState, x: Tensor, labels: Tensor) -> None:
        for c in labels.unique().tolist():
            xs = x[labels == c] if x.shape[0] > 1 else x
            kept = st.growing.get(c)
            start = 0
            if kept is None:
                kept, start = xs[:1], 1
                st.kept_dists[c], st.thresholds[c] = [0.0, 0.0, 0.0], 0.0  # count, sum, sum of squares
            to_kept = pairwise(xs, kept).min(1).values.tolist()
            within = pairwise(xs, xs).tolist() if xs.shape[0] > 1 else None
            stats = st.kept_dists[c]
            added: list[int] = []
            for i in range(start, xs.shape[0]):  # sequential by definition: each query may join the kept set
                d = to_kept[i]
                if added and within is not None:
                    d = min(d, min(within[i][a] for a in added))
                st.dists.append(d)
                if d > st.thresholds[c]:
                    added.append(i)
                    stats[0] += 1
                    stats[1] += d
                    stats[2] += d * d
                    n, mean = stats[0], stats[1] / stats[0]
                    std = math.sqrt(max(stats[2] - n * mean * mean, 0.0) / (n - 1)) if n > 1 else 0.0
                    st.thresholds[c] = max(st.thresholds[c], mean - std)
            if added:
                kept = torch.cat([kept, xs[added]])[-self.max_kept :]  # bounds the cost per query
            st.growing[c] = kept
        if len(st.dists) > self.max_history:
            del st.dists[: len(st.dists) - self.max_history]

    def forget(self, key_id: str) -> None:
        """Drop the key's history: the monitor re-arms for it."""
        self._keys.pop(key_id)

    def observe(self, event: QueryEvent) -> list[Alert]:
        st = self._keys.get_or_create(event.key_id, _PradaState)
        n = int(event.inputs.shape[0])
        st.queries += n
        self._feed(st, project(event.inputs.float(), self.dim), event.labels)
        st.since_test += n
        if st.alerted or len(st.dists) < self.min_queries or st.since_test < self.test_every:
            return []
        st.since_test = 0
        w = float(shapiro(st.dists).statistic)
        if w >= self.threshold:
            return []
        st.alerted = True
        return [
            Alert(
                monitor=self.name,
                kind="extraction",
                key_id=event.key_id,
                severity=Severity.CRITICAL,
                message=(
                    f"query distances of this key are far from normal (Shapiro-Wilk W {w:.3f} < {self.threshold}) "
                    f"after {st.queries} queries: the pattern of synthetic extraction queries"
                ),
                score=1.0 - w,
                atlas="AML.T0024.002",
                time=event.time,
                evidence={"shapiro_w": w, "queries": st.queries, "distances": len(st.dists)},
            )
        ]


@dataclass
class _ProbeState:
    buffer: Tensor  # ring buffer of the key's last `history` queries
    sq: Tensor  # their squared norms
    filled: int = 0
    head: int = 0  # where the next query is written
    hits: deque[int] = field(default_factory=deque)  # query numbers of near-duplicate queries
    alerted: bool = False
    queries: int = 0


@dataclass
class ProbingMonitor:
    """Stateful detection: a query whose k nearest neighbours among the key's recent queries are unusually close.

    Query-based attacks (Square, HopSkipJump, boundary and gradient-estimation attacks) send long runs of
    near-duplicates of the inputs they work on; natural traffic almost never does. The distance threshold is the
    ``percentile`` of the same k-NN statistic over the model's clean data, so it adapts to the input space.
    ``hits`` such queries within the key's last ``history`` queries raise a critical alert.

    Paper: Chen, Carlini & Wagner, "Stateful detection of black-box adversarial attacks", ACM SPAI 2020 (arXiv
    1907.05587, 2019). Distances are taken in input space here (the paper also allows a learned similarity encoder).
    """

    threshold: float
    k: int = 5
    history: int = 1_000
    hits: int = 10
    dim: int = 128
    name: str = "probing"
    max_keys: int = 10_000
    _keys: KeyStates[_ProbeState] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.threshold > 0:
            raise InputValidationError(f"threshold must be > 0, got {self.threshold}")
        self._keys = KeyStates(self.max_keys)

    @staticmethod
    def knn_mean(x: Tensor, ref: Tensor, k: int, *, exclude_self: bool = False) -> Tensor:
        d = pairwise(x, ref)
        if exclude_self:
            d.fill_diagonal_(float("inf"))
        kk = min(k, ref.shape[0] - (1 if exclude_self else 0))
        return d.topk(max(1, kk), dim=1, largest=False).values.mean(1)

    @classmethod
    def calibrate(cls, clean: Tensor, *, k: int = 5, percentile: float = 0.1, **kwargs: object) -> ProbingMonitor:
        """Threshold from clean inputs (N, ...): the ``percentile`` of their k-NN mean distances among each other."""
        dim = int(kwargs.get("dim", cls.dim))  # type: ignore[call-overload]
        flat = project(clean.flatten(1).float(), dim)
        if flat.shape[0] <= k + 1:
            raise InputValidationError(f"calibration needs more than k + 1 = {k + 1} clean inputs, got {flat.shape[0]}")
        stat = cls.knn_mean(flat, flat, k, exclude_self=True)
        threshold = float(torch.quantile(stat.double(), percentile / 100))
        return cls(threshold=max(threshold, 1e-9), k=k, **kwargs)  # type: ignore[arg-type]

    def _observe_batch(self, st: _ProbeState, x: Tensor, first: int) -> float:
        """Score a batch, each query against the key's buffer and the queries before it in the batch."""
        n = x.shape[0]
        parts = [pairwise(x, st.buffer[: st.filled], st.sq[: st.filled])] if st.filled else []
        if n > 1:
            within = pairwise(x, x)
            within.masked_fill_(torch.ones(n, n, dtype=torch.bool).triu(), float("inf"))
            parts.append(within)
        available = st.filled + torch.arange(n)
        kk = min(self.k, st.filled + n - 1)
        if kk >= 1 and parts:
            d = torch.cat(parts, 1) if len(parts) > 1 else parts[0]
            knn = d.topk(kk, dim=1, largest=False).values
            counts = available.clamp(max=kk)
            valid = torch.arange(kk).unsqueeze(0) < counts.unsqueeze(1)
            mean = torch.where(valid, knn, torch.zeros_like(knn)).sum(1) / counts.clamp_min(1)
            close = (mean < self.threshold) & (available >= self.k)
            st.hits.extend((first + close.nonzero().flatten()).tolist())
            closest = float(mean.min())
        else:
            closest = float("inf")
        keep = x[-self.history :]
        m = keep.shape[0]
        idx = (st.head + torch.arange(m)) % self.history
        st.buffer[idx] = keep
        st.sq[idx] = (keep * keep).sum(1)
        st.head = (st.head + m) % self.history
        st.filled = min(self.history, st.filled + m)
        return closest

    def forget(self, key_id: str) -> None:
        """Drop the key's history: the monitor re-arms for it."""
        self._keys.pop(key_id)

    def observe(self, event: QueryEvent) -> list[Alert]:
        x = project(event.inputs.float(), self.dim)
        dim = x.shape[1]
        st = self._keys.get_or_create(
            event.key_id, lambda: _ProbeState(torch.empty(self.history, dim), torch.empty(self.history))
        )
        n = x.shape[0]
        first = st.queries
        st.queries += n
        if n == 1:  # the common case, with a quarter of the tensor operations
            closest = float("inf")
            if st.filled >= self.k:
                d = pairwise(x, st.buffer[: st.filled], st.sq[: st.filled])
                closest = float(d.topk(self.k, dim=1, largest=False).values.mean())
                if closest < self.threshold:
                    st.hits.append(first)
            st.buffer[st.head] = x[0]
            st.sq[st.head] = (x[0] * x[0]).sum()
            st.head = (st.head + 1) % self.history
            st.filled = min(self.history, st.filled + 1)
        else:
            closest = self._observe_batch(st, x, first)
        while st.hits and st.hits[0] < st.queries - self.history:  # only hits among the last `history` queries
            st.hits.popleft()
        if st.alerted or len(st.hits) < self.hits:
            return []
        st.alerted = True
        return [
            Alert(
                monitor=self.name,
                kind="probing",
                key_id=event.key_id,
                severity=Severity.CRITICAL,
                message=(
                    f"{len(st.hits)} near-duplicate queries (mean distance to their {self.k} nearest earlier queries "
                    f"below {self.threshold:.4g}; closest {closest:.4g}) after {st.queries} queries: the pattern of a "
                    "query-based adversarial attack"
                ),
                score=len(st.hits) / self.hits,
                atlas="AML.T0043",
                time=event.time,
                evidence={"near_duplicates": len(st.hits), "threshold": self.threshold, "queries": st.queries},
            )
        ]


class ExtractionSettings(MonitorSettings):
    min_queries: int = Field(100, ge=20)
    threshold: float = Field(0.85, gt=0, lt=1)
    max_history: int = Field(5_000, ge=100)


class ProbingSettings(MonitorSettings):
    k: int = Field(5, ge=1)
    history: int = Field(1_000, ge=10)
    percentile: float = Field(0.1, gt=0, lt=50)
    hits: int = Field(10, ge=1, description="near-duplicate queries within the history that raise an alert")


MONITORS.add(
    "extraction",
    MonitorKind(
        "extraction",
        ExtractionSettings,
        lambda st, clean, probs: ExtractionMonitor(
            threshold=st.threshold, min_queries=st.min_queries, max_history=st.max_history
        ),
        "Model extraction (query distribution not natural)",
        (
            "The key's threat level was raised; rate and output are restricted by the level's policy.",
            "Check the key's daily volume and the spread of its queries in the audit log.",
            "Revoke the key if the use is not covered by its terms; consider label-only output for its scope.",
        ),
    ),
)
MONITORS.add(
    "probing",
    MonitorKind(
        "probing",
        ProbingSettings,
        lambda st, clean, probs: ProbingMonitor.calibrate(
            clean, k=st.k, percentile=st.percentile, history=st.history, hits=st.hits
        ),
        "Adversarial probing (query-based evasion attack)",
        (
            "The key's threat level was raised; its responses follow the level's output policy (e.g. labels only).",
            "Review the key's recent queries in the audit log (bastion audit export) for near-duplicate inputs.",
            "If the traffic is not a known test, revoke the key (bastion keys revoke KEY_ID) and contact its owner.",
            "Re-assess the model against the attack seen (bastion assess --policy blackbox) before lowering the level.",
        ),
    ),
)
