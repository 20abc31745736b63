"""Query-pattern analysis per key: model extraction (PRADA) and adversarial probing (stateful k-NN detection)."""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from pydantic import Field
from scipy.stats import shapiro
from torch import Tensor, nn

from bastion.errors import InputValidationError
from bastion.monitors._distance import Projected, nearest, nearest_distance, pairwise, project
from bastion.monitors.base import Alert, KeyStates, QueryEvent, Severity
from bastion.monitors.registry import MONITORS, MonitorKind, MonitorSettings
from bastion.monitors.similarity import EncoderSettings, SimilarityEncoder, encoder_for

log = logging.getLogger(__name__)


@dataclass
class _PradaState:
    growing: dict[int, Tensor] = field(default_factory=dict)  # per class: the kept queries (M, D)
    kept_sq: dict[int, Tensor] = field(default_factory=dict)  # per class: their squared norms (M,)
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
        for c in labels.unique().tolist() if x.shape[0] > 1 else [int(labels[0])]:
            xs = x[labels == c] if x.shape[0] > 1 else x
            kept, kept_sq = st.growing.get(c), st.kept_sq.get(c)
            start = 0
            if kept is None or kept_sq is None:
                kept, start = xs[:1], 1
                kept_sq = (kept * kept).sum(1)
                st.kept_dists[c], st.thresholds[c] = [0.0, 0.0, 0.0], 0.0  # count, sum, sum of squares
            to_kept = nearest_distance(xs, kept, kept_sq).tolist()
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
                new = xs[added]
                kept = torch.cat([kept, new])[-self.max_kept :]  # bounds the cost per query
                kept_sq = torch.cat([kept_sq, (new * new).sum(1)])[-self.max_kept :]
            st.growing[c], st.kept_sq[c] = kept, kept_sq
        if len(st.dists) > self.max_history:
            del st.dists[: len(st.dists) - self.max_history]

    def forget(self, key_id: str) -> None:
        """Drop the key's history: the monitor re-arms for it."""
        self._keys.pop(key_id)

    def prepare(self, inputs: Tensor) -> Tensor:
        """The inputs in the monitor's projected space (for the gateway to compute off its event loop)."""
        return project(inputs.flatten(1).float(), self.dim)

    def prepare_module(self, input_shape: tuple[int, ...]) -> nn.Module:
        """:meth:`prepare` as a traceable module over inputs (N, *input_shape), for the gateway's model graph."""
        return Projected(math.prod(input_shape), self.dim)

    def natural_low(self, clean: Tensor, labels: Tensor, batch: int = 10) -> float:
        """The lowest W a key sending ``clean`` inputs (in order, ``batch`` a request) reaches: what natural traffic
        of this input space looks like to the test (1.0 when the inputs are too few to test)."""
        st, low = _PradaState(), 1.0
        for i in range(0, clean.shape[0], batch):
            self._feed(st, project(clean[i : i + batch].flatten(1).float(), self.dim), labels[i : i + batch])
            if len(st.dists) >= self.min_queries:
                low = min(low, float(shapiro(st.dists).statistic))
        return low

    def observe(self, event: QueryEvent) -> list[Alert]:
        st = self._keys.get_or_create(event.key_id, _PradaState)
        n = int(event.inputs.shape[0])
        st.queries += n
        x = event.prepared.get(self.name)
        self._feed(st, self.prepare(event.inputs) if x is None else x, event.labels)
        st.since_test += n
        # the test's cost grows with the history: past 1,000 distances it runs every 1% of them (at most 50 queries
        # late, against the thousands a synthetic extraction needs)
        every = max(self.test_every, len(st.dists) // 100)
        if st.alerted or len(st.dists) < self.min_queries or st.since_test < every:
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
class _Cluster:
    """Near-duplicate queries that chain to one another, whoever sent them."""

    hits: list[int] = field(default_factory=list)  # service query numbers of its hits, oldest first
    keys: dict[str, int] = field(default_factory=dict)  # key -> near-duplicates of the cluster it sent
    alerted: set[str] = field(default_factory=set)

    def recent(self, oldest: int) -> int:
        """Drop the hits before service query ``oldest`` (hits are kept in order) and count those left."""
        drop = 0
        while drop < len(self.hits) and self.hits[drop] < oldest:
            drop += 1
        if drop:
            del self.hits[:drop]
        return len(self.hits)

    def absorb(self, other: _Cluster) -> None:
        self.hits = sorted(self.hits + other.hits)
        for k, v in other.keys.items():
            self.keys[k] = self.keys.get(k, 0) + v
        self.alerted |= other.alerted


@dataclass
class _SharedIndex:
    """The service's last queries from every key, for near-duplicates that are spread over several keys."""

    buffer: Tensor
    sq: Tensor
    owner: list[str | None]
    cluster: Tensor  # per entry: the cluster it belongs to (its own id until a near-duplicate links it)
    sent: dict[str, int] = field(default_factory=dict)  # key -> its entries in the index
    # every query of the service's last ``len(buffer)`` (exact repeats too, which the index does not keep), by key:
    # what share of a key's traffic an attack's cluster is
    recent: deque[str] = field(default_factory=deque)
    recent_count: dict[str, int] = field(default_factory=dict)
    filled: int = 0
    head: int = 0
    queries: int = 0
    next_cluster: int = 0
    clusters: dict[int, _Cluster] = field(default_factory=dict)

    def put(self, key_id: str, x: Tensor, ids: list[int]) -> None:
        """Write queries (the oldest entries overwritten first) with their cluster ids, keeping per-key counts."""
        size = self.buffer.shape[0]
        x, ids = x[-size:], ids[-size:]
        positions = [(self.head + i) % size for i in range(x.shape[0])]
        if len(positions) == 1:  # a request's one input: plain indexing, a third of the tensor operations
            pos = positions[0]
            self.buffer[pos] = x[0]
            self.sq[pos] = x[0].dot(x[0])
            self.cluster[pos] = ids[0]
        else:
            idx = torch.tensor(positions)
            self.buffer[idx] = x
            self.sq[idx] = (x * x).sum(1)
            self.cluster[idx] = torch.tensor(ids)
        for pos in positions:
            old = self.owner[pos]
            if old is not None:
                self.sent[old] -= 1
                if not self.sent[old]:
                    del self.sent[old]
            self.owner[pos] = key_id
        self.sent[key_id] = self.sent.get(key_id, 0) + x.shape[0]
        self.head = (self.head + x.shape[0]) % size
        self.filled = min(size, self.filled + x.shape[0])

    def count(self, key_id: str, n: int) -> None:
        """``n`` more queries from ``key_id``, the oldest beyond the index's size forgotten."""
        size = self.buffer.shape[0]
        self.recent.extend([key_id] * min(n, size))
        self.recent_count[key_id] = self.recent_count.get(key_id, 0) + min(n, size)
        while len(self.recent) > size:
            old = self.recent.popleft()
            left = self.recent_count.get(old, 0) - 1  # a forgotten key's count was dropped already
            if left > 0:
                self.recent_count[old] = left
            else:
                self.recent_count.pop(old, None)

    def merge(self, ids: set[int]) -> int:
        """Make the clusters ``ids`` one (under the oldest id) and return that id."""
        keep = min(ids)
        for other in ids - {keep}:
            self.cluster[self.cluster == other] = keep
            absorbed = self.clusters.pop(other, None)
            if absorbed is not None:
                self.clusters.setdefault(keep, _Cluster()).absorb(absorbed)
        return keep


def _features(x: Tensor, embed: Callable[[Tensor], Tensor] | None, dim: int) -> Tensor:
    return embed(x) if embed is not None else project(x.flatten(1).float(), dim)


@dataclass
class ProbingMonitor:
    """Stateful detection: a query whose k nearest neighbours among recent queries are unusually close.

    Query-based attacks (Square, SimBA, HopSkipJump, boundary and gradient-estimation attacks) send long runs of
    near-duplicates of the inputs they work on; natural traffic almost never does. Distances are taken in the space
    of ``embed`` — by default a fixed random projection of the input; in the gateway a similarity encoder trained to
    ignore query blinding (noise, shifts, brightness/contrast; bastion.monitors.similarity). The threshold is the
    ``percentile`` of the same k-NN statistic over clean data in that space. ``hits`` such queries within the
    key's last ``history`` queries raise a critical alert for the key.

    Spread over several keys (a Sybil attacker), each key alone may send too few queries; a service-wide index of
    the last ``shared_history`` queries links near-duplicates across keys into clusters, and a cluster with
    ``hits`` hits from two or more keys, each of which sent ``shared_min_hits`` of them, raises an alert for each
    such key. Exact repeats (the same input sent
    again, as when many clients replay one dataset) are not near-duplicates there: they give an attacker nothing.

    Paper: Chen, Carlini & Wagner, "Stateful detection of black-box adversarial attacks", ACM SPAI 2020 (arXiv
    1907.05587, 2019).
    """

    threshold: float
    k: int = 5
    history: int = 1_000
    hits: int = 10
    dim: int = 128
    name: str = "probing"
    max_keys: int = 10_000
    shared_history: int = 5_000
    shared_min_hits: int = 3
    shared_min_share: float = 0.2
    embed: Callable[[Tensor], Tensor] | None = field(default=None, repr=False)
    _keys: KeyStates[_ProbeState] = field(init=False, repr=False)
    _shared: _SharedIndex | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        if not self.threshold > 0:
            raise InputValidationError(f"threshold must be > 0, got {self.threshold}")
        self._keys = KeyStates(self.max_keys)

    def features(self, x: Tensor) -> Tensor:
        """Inputs (N, ...) in the space distances are taken in."""
        return _features(x, self.embed, self.dim)

    def prepare(self, inputs: Tensor) -> Tensor:
        """The monitor's features of ``inputs``, for the gateway to compute off its event loop (``observe`` reads
        them from ``event.prepared``): the similarity encoder's embedding is a network call."""
        return self.features(inputs)

    def prepare_module(self, input_shape: tuple[int, ...]) -> nn.Module | None:
        """:meth:`prepare` as a traceable module over inputs (N, *input_shape), for the gateway's model graph; None
        for an ``embed`` that is not Bastion's similarity encoder."""
        if self.embed is None:
            return Projected(math.prod(input_shape), self.dim)
        return self.embed.module() if isinstance(self.embed, SimilarityEncoder) else None

    @staticmethod
    def knn_mean(x: Tensor, ref: Tensor, k: int, *, exclude_self: bool = False) -> Tensor:
        d = pairwise(x, ref)
        if exclude_self:
            d.fill_diagonal_(float("inf"))
        kk = min(k, ref.shape[0] - (1 if exclude_self else 0))
        return d.topk(max(1, kk), dim=1, largest=False).values.mean(1)

    @classmethod
    def calibrate(
        cls,
        clean: Tensor,
        *,
        k: int = 5,
        percentile: float = 0.1,
        embed: Callable[[Tensor], Tensor] | None = None,
        reference: Tensor | None = None,
        **kwargs: object,
    ) -> ProbingMonitor:
        """Threshold from clean inputs (N, ...): the ``percentile`` of their k-NN mean distances among each other,
        or, with ``reference``, among those inputs (``clean`` must then be its last rows, each skipped as its own
        neighbour)."""
        dim = int(kwargs.get("dim", cls.dim))  # type: ignore[call-overload]
        flat = _features(clean, embed, dim)
        if flat.shape[0] <= k + 1:
            raise InputValidationError(f"calibration needs more than k + 1 = {k + 1} clean inputs, got {flat.shape[0]}")
        if reference is None:
            stat = cls.knn_mean(flat, flat, k, exclude_self=True)
        else:
            d = pairwise(flat, _features(reference, embed, dim))
            own = torch.arange(flat.shape[0])
            d[own, reference.shape[0] - flat.shape[0] + own] = float("inf")
            stat = d.topk(k, dim=1, largest=False).values.mean(1)
        threshold = float(torch.quantile(stat.double(), percentile / 100))
        return cls(threshold=max(threshold, 1e-9), k=k, embed=embed, **kwargs)  # type: ignore[arg-type]

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
        """Drop the key's history, in its own state and in the service-wide index: the monitor re-arms for it."""
        self._keys.pop(key_id)
        sh = self._shared
        if sh is None:
            return
        mine = [i for i, o in enumerate(sh.owner) if o == key_id]
        if mine:
            sh.sq[mine] = float("inf")  # its entries are never anyone's neighbours again
            for i in mine:
                sh.owner[i] = None
        sh.sent.pop(key_id, None)
        sh.recent_count.pop(key_id, None)
        for c in sh.clusters.values():
            c.keys.pop(key_id, None)
            c.alerted.discard(key_id)

    def _observe_shared(self, key_id: str, x: Tensor, time: float) -> list[Alert]:
        """Link the queries to near-duplicates sent by any key; alert the keys of a cluster that several keys built
        up to ``hits`` hits."""
        if self._shared is None:
            size = self.shared_history
            self._shared = _SharedIndex(
                torch.zeros(size, x.shape[1]),
                torch.full((size,), float("inf")),
                [None] * size,
                torch.full((size,), -1, dtype=torch.long),
            )
        sh = self._shared
        n = x.shape[0]
        first = sh.queries
        sh.queries += n
        ids = list(range(sh.next_cluster, sh.next_cluster + n))  # a query that is no near-duplicate starts its own
        sh.next_cluster += n
        touched: set[int] = set()
        fresh: Tensor | None = None  # all of them, until the index is full enough to tell
        if sh.filled >= self.k:
            # exact repeats are neither near-duplicates (they tell an attacker nothing new) nor kept (many copies of
            # one input would stand in for k distinct neighbours)
            repeat = 0.02 * self.threshold
            near, at, repeated = nearest(x, sh.buffer[: sh.filled], sh.sq[: sh.filled], self.k, ignore_below=repeat)
            fresh = ~repeated
            hit = (near.mean(1) < self.threshold) & fresh
            for r in hit.nonzero().flatten().tolist():
                neighbours = at[r]
                # the hit joins every cluster among its neighbours into one: an attack whose first queries each
                # started a cluster of their own is one cluster, not many small ones
                cid = sh.merge(set(sh.cluster[neighbours].tolist()))
                c = sh.clusters.setdefault(cid, _Cluster())
                c.hits.append(first + r)
                c.keys[key_id] = c.keys.get(key_id, 0) + 1
                for j in neighbours.tolist():
                    owner = sh.owner[j]
                    if owner is not None and owner != key_id:
                        c.keys.setdefault(owner, 1)  # it sent a query this one is a near-duplicate of
                ids[r] = cid
                touched.add(cid)
        if fresh is None:
            sh.put(key_id, x, ids)
        else:
            keep = fresh.tolist()
            if any(keep):
                sh.put(key_id, x if all(keep) else x[fresh], [i for i, k in zip(ids, keep, strict=True) if k])
        sh.count(key_id, n)
        oldest = sh.queries - self.shared_history
        alerts: list[Alert] = []
        totals: dict[str, int] | None = None
        for cid in touched:
            cl = sh.clusters.get(cid)
            if cl is None:
                continue  # merged into another cluster by a later row of this batch
            if cl.recent(oldest) < self.hits:
                continue
            if totals is None:
                totals = self._attack_totals(sh, oldest)
            named = [k for k in cl.keys if self._in_attack(sh, k, totals.get(k, 0))]
            if len(named) < 2:
                continue
            for k in named:
                own = self._keys.get(k)
                if k in cl.alerted or (own is not None and own.alerted):
                    continue  # already named, or already flagged by its own history
                cl.alerted.add(k)
                if own is not None:
                    own.alerted = True
                alerts.append(
                    self._alert(
                        k,
                        time,
                        len(cl.hits),
                        f"{len(cl.hits)} near-duplicate queries spread over {len(named)} keys (a cluster of queries "
                        f"within {self.threshold:.4g} of each other): a query-based attack split across keys",
                        {"keys": sorted(named), "shared": True, "queries": sh.queries},
                    )
                )
        if sh.queries % 1_000 < n:  # now and then, drop clusters that went quiet
            for cid in [cid for cid, c in sh.clusters.items() if not c.hits or c.hits[-1] < oldest]:
                del sh.clusters[cid]
        return alerts

    def _attack_totals(self, sh: _SharedIndex, oldest: int) -> dict[str, int]:
        """Per key, its near-duplicates over every cluster with ``hits`` hits since query ``oldest``: an attack on
        several inputs at once (Square on a batch of images, round-robin over keys) builds one cluster per input,
        each holding only a share of each key's queries, and what names a key is the share of its traffic that is
        attack, whichever input it went to."""
        totals: dict[str, int] = {}
        for c in sh.clusters.values():
            if c.recent(oldest) >= self.hits:
                for k, v in c.keys.items():
                    totals[k] = totals.get(k, 0) + v
        return totals

    def _in_attack(self, sh: _SharedIndex, key_id: str, near_duplicates: int) -> bool:
        """A key takes part in a cluster when it sent ``shared_min_hits`` of its near-duplicates and they are at
        least ``shared_min_share`` of what it sent lately, or when they are at least half of it (an attacker with
        many keys, each sending a few queries). A client that sends the attacked image once among its own traffic is
        neither; nor is a busy client whose natural traffic holds a few images like the attacked one — else an
        attacker could frame it, and get it degraded, by probing near images it is known to send (measured in the
        50-client mix of bench/scale.py before the share was required: the busiest benign key was named). An
        attacker who hides each key's attack queries among four times as many others is not named by this rule:
        the price of the protection, paid in the attacker's query budget."""
        sent = sh.recent_count.get(key_id, 0)  # all its recent queries: repeats of others' inputs count too
        if sent <= 0:
            return False
        many = near_duplicates >= self.shared_min_hits and near_duplicates >= self.shared_min_share * sent
        return many or 2 * near_duplicates >= sent

    def _alert(self, key_id: str, time: float, hits: int, message: str, evidence: dict[str, object]) -> Alert:
        return Alert(
            monitor=self.name,
            kind="probing",
            key_id=key_id,
            severity=Severity.CRITICAL,
            message=message,
            score=hits / self.hits,
            atlas="AML.T0043",
            time=time,
            evidence={"near_duplicates": hits, "threshold": self.threshold, **evidence},
        )

    def observe(self, event: QueryEvent) -> list[Alert]:
        x = event.prepared.get(self.name)
        if x is None:
            x = self.features(event.inputs)
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
                closest = float(nearest(x, st.buffer[: st.filled], st.sq[: st.filled], self.k)[0].mean())
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
        alerts = self._observe_shared(event.key_id, x, event.time) if self.shared_history else []
        if st.alerted or len(st.hits) < self.hits:
            return alerts
        st.alerted = True
        alerts.append(
            self._alert(
                event.key_id,
                event.time,
                len(st.hits),
                f"{len(st.hits)} near-duplicate queries (mean distance to their {self.k} nearest earlier queries below "
                f"{self.threshold:.4g}; closest {closest:.4g}) after {st.queries} queries: the pattern of a query-based "
                "adversarial attack",
                {"queries": st.queries},
            )
        )
        return alerts


class ExtractionSettings(MonitorSettings):
    min_queries: int = Field(100, ge=20)
    threshold: float = Field(0.85, gt=0, lt=1)
    max_history: int = Field(5_000, ge=100)
    margin: float = Field(
        0.05, ge=0, lt=1, description="how far below the lowest W of clean traffic the threshold is set, when lower"
    )


class ProbingSettings(MonitorSettings):
    k: int = Field(10, ge=1)
    history: int = Field(1_000, ge=10)
    percentile: float = Field(0.1, gt=0, lt=50)
    hits: int = Field(10, ge=1, description="near-duplicate queries within the history that raise an alert")
    shared_history: int = Field(
        5_000, ge=0, description="service-wide queries kept to link an attack spread over keys (0: off)"
    )
    shared_min_share: float = Field(
        0.2, ge=0, le=1, description="share of a key's recent queries that must be in an attack's cluster to name it"
    )
    encoder: bool = Field(True, description="distances in a similarity encoder trained to ignore query blinding")
    encoder_steps: int = Field(1_500, ge=10, description="training steps of the similarity encoder")


def _build_extraction(st: ExtractionSettings, clean: Tensor, probs: Tensor) -> ExtractionMonitor:
    """The configured W threshold, lowered below what a key replaying clean inputs reaches where natural traffic
    itself is far from normal (tabular features of very different scales: W 0.65 on scikit-learn's breast cancer,
    where 0.85 flagged a client replaying the test set)."""
    mon = ExtractionMonitor(threshold=st.threshold, min_queries=st.min_queries, max_history=st.max_history)
    low = mon.natural_low(clean[-2_000:], probs[-2_000:].argmax(1))
    if low - st.margin >= st.threshold:
        return mon
    threshold = max(low - st.margin, 0.01)
    log.warning(
        "extraction monitor: clean inputs reach Shapiro-Wilk W %.3f, less than the margin %.2f above the configured "
        "%.2f; threshold set to %.3f (synthetic extraction queries must look less normal than that to be flagged)",
        low,
        st.margin,
        st.threshold,
        threshold,
    )
    return ExtractionMonitor(threshold=threshold, min_queries=st.min_queries, max_history=st.max_history)


def _build_probing(st: ProbingSettings, clean: Tensor, probs: Tensor) -> ProbingMonitor:
    """With the encoder, the threshold is what inputs the encoder never saw look like to it (an encoder spreads
    its own training inputs apart, so a threshold set on them flags natural traffic): it trains on all but the last
    2,000 clean inputs, set aside for the threshold, when there are 4,000 or more; with fewer, on three quarters,
    and the last quarter's distances to all the clean inputs set the threshold."""
    del probs
    if not st.encoder:
        return ProbingMonitor.calibrate(
            clean[-2_000:],
            k=st.k,
            percentile=st.percentile,
            history=st.history,
            hits=st.hits,
            shared_history=st.shared_history,
            shared_min_share=st.shared_min_share,
        )
    n = clean.shape[0]
    held = 2_000 if n >= 4_000 else max(n // 4, st.k + 2)
    embed = encoder_for(
        clean[:-held], (float(clean.min()), float(clean.max())), EncoderSettings(steps=st.encoder_steps)
    )
    return ProbingMonitor.calibrate(
        clean[-held:],
        k=st.k,
        percentile=st.percentile,
        embed=embed,
        reference=None if n >= 4_000 else clean,
        history=st.history,
        hits=st.hits,
        shared_history=st.shared_history,
        shared_min_share=st.shared_min_share,
    )


MONITORS.add(
    "extraction",
    MonitorKind(
        "extraction",
        ExtractionSettings,
        _build_extraction,
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
        _build_probing,
        "Adversarial probing (query-based evasion attack)",
        (
            "The key's threat level was raised; its responses follow the level's output policy (e.g. labels only).",
            "Review the key's recent queries in the audit log (bastion audit export) for near-duplicate inputs.",
            "If the traffic is not a known test, revoke the key (bastion keys revoke KEY_ID) and contact its owner.",
            "Re-assess the model against the attack seen (bastion assess --policy blackbox) before lowering the level.",
        ),
    ),
)
