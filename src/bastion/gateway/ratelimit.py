"""Per-key rate limits over the ``limits`` library: a burst of requests, a sustained rate and a daily budget of inputs.

Three windows per key: requests per second (a moving window: a burst allowance that is checked before the body is
even parsed, so malformed floods are capped too), inputs per minute (a sliding-window counter: the sustained rate)
and inputs per day (a fixed daily window: the query budget). Inputs, not requests, are what an attacker spends, so a
batch of 100 costs 100. A threat-level factor below 1 shrinks every allowance without resetting the counters.

The storage is ``limits``' in-process memory by default; a ``redis://`` URL shares counters between replicas.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerDay, RateLimitItemPerMinute, RateLimitItemPerSecond, storage
from limits.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)
from limits.strategies import (
    RateLimiter as _Strategy,
)

from bastion.errors import ConfigError

log = logging.getLogger(__name__)


class _InlineExpiryMemory(storage.MemoryStorage):
    """``limits``' memory storage without its cleanup thread.

    The stock storage starts a ``threading.Timer`` whenever the last one has finished (every 10 ms under load) to
    drop expired counters; on the gateway's 2-core benchmark that cost about 0.5 ms per request (a thread start per
    two requests). Reads already drop an expired counter, so the sweep only frees memory: here it runs inline, at
    most once a second. Overrides limits' private hook (name-mangled), so tests/gateway/test_ratelimit.py checks that
    no thread is started and that expired counters are still swept.
    """

    SWEEP_S = 1.0

    def __init__(self, uri: str | None = None, **options: str) -> None:
        super().__init__(uri, **options)  # type: ignore[arg-type]
        self.timer.cancel()
        self._next_sweep = 0.0

    def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self.SWEEP_S
            self._MemoryStorage__expire_events()  # type: ignore[attr-defined]


def _storage(url: str) -> storage.Storage:
    if url.strip() == "memory://":
        return _InlineExpiryMemory()
    return storage.storage_from_string(url)  # type: ignore[return-value]


@dataclass(frozen=True)
class RateDecision:
    """Whether a charge was allowed; when not, why, and how many seconds to wait."""

    allowed: bool
    limit: str = ""
    retry_after: int = 0
    message: str = ""
    too_large: bool = False


class RateLimiter:
    """Burst, sustained and daily limits per key id.

    With a shared storage (``redis://``) that fails, the limiter does not fail the request: it switches to counters
    in this process (limits still hold, per replica), calls ``on_change(True, reason)``, and tries the shared storage
    again every RETRY_S seconds; when it answers, it switches back and calls ``on_change(False, ...)``. The counts
    made meanwhile stay local (a replica's allowance was at most doubled while the shared state was gone)."""

    RETRY_S = 2.0

    def __init__(
        self,
        requests_per_second: int,
        inputs_per_minute: int,
        inputs_per_day: int,
        storage_url: str = "memory://",
        on_change: Callable[[bool, str], None] | None = None,
    ) -> None:
        for name, value in (
            ("requests_per_second", requests_per_second),
            ("inputs_per_minute", inputs_per_minute),
            ("inputs_per_day", inputs_per_day),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"rate limit {name} must be a positive integer, got {value!r}")
        try:
            self._storage = _storage(storage_url)
        except Exception as exc:  # limits raises its own ConfigurationError or ImportError for a missing driver
            raise ConfigError(f"cannot use rate-limit storage {storage_url!r}: {exc}") from None
        self._burst = RateLimitItemPerSecond(requests_per_second)
        self._minute = RateLimitItemPerMinute(inputs_per_minute)
        self._day = RateLimitItemPerDay(inputs_per_day)
        self._shared = storage_url.strip() != "memory://"
        self._on_change = on_change
        self.degraded: str | None = None  # why the shared storage is not in use, while it is not
        self._retry_at = 0.0
        self._use(self._storage)
        self._lock = threading.Lock()

    def _use(self, store: storage.Storage) -> None:
        self._moving = MovingWindowRateLimiter(store)
        self._sliding = SlidingWindowCounterRateLimiter(store)
        self._fixed = FixedWindowRateLimiter(store)

    def _guarded(self, fn: Callable[[], RateDecision]) -> RateDecision:
        """Run a charge; on a shared-storage failure, fall back to local counters (and come back later)."""
        if self.degraded is not None and time.monotonic() >= self._retry_at:
            self._retry_at = time.monotonic() + self.RETRY_S
            try:
                ok = bool(self._storage.check())
            except Exception:  # the shared storage is still down
                ok = False
            if ok:
                self._use(self._storage)
                self.degraded = None
                log.warning("rate limits: the shared storage is back; using it again")
                if self._on_change is not None:
                    self._on_change(False, "shared rate-limit storage restored")
        try:
            return fn()
        except Exception as exc:  # redis errors and the like: never a failed request for the store's sake
            if not self._shared or self.degraded is not None:
                raise
            self.degraded = f"shared rate-limit storage unavailable ({type(exc).__name__}); limits are per replica"
            self._retry_at = time.monotonic() + self.RETRY_S
            self._use(_InlineExpiryMemory())
            log.error("rate limits: %s", self.degraded)
            if self._on_change is not None:
                self._on_change(True, self.degraded)
            return fn()

    @staticmethod
    def _allowance(item: RateLimitItem, factor: float) -> int:
        return max(1, math.floor(item.amount * factor))

    def _check(
        self, strategy: _Strategy, item: RateLimitItem, key_id: str, cost: int, factor: float, what: str
    ) -> RateDecision | None:
        allowance = self._allowance(item, factor)
        stats = strategy.get_window_stats(item, key_id)
        used = item.amount - stats.remaining
        if used + cost <= allowance:
            return None
        wait = max(1, math.ceil(stats.reset_time - time.time()))
        if cost > allowance:
            return RateDecision(
                False,
                what,
                wait,
                f"a batch of {cost} inputs exceeds this key's allowance of {allowance} {what}; send smaller batches",
                too_large=True,
            )
        return RateDecision(False, what, wait, f"rate limit exceeded: {allowance} {what}; retry after {wait} s")

    def charge_request(self, key_id: str, factor: float = 1.0) -> RateDecision:
        """Count one request against the burst allowance."""

        def charge() -> RateDecision:
            refused = self._check(self._moving, self._burst, key_id, 1, factor, "requests per second")
            if refused is not None:
                return refused
            self._moving.hit(self._burst, key_id)
            return RateDecision(True)

        with self._lock:
            return self._guarded(charge)

    def charge_inputs(self, key_id: str, n: int, factor: float = 1.0) -> RateDecision:
        """Charge ``n`` inputs against the sustained rate and the daily budget, or neither."""

        def charge() -> RateDecision:
            for strategy, item, what in (
                (self._sliding, self._minute, "inputs per minute"),
                (self._fixed, self._day, "inputs per day"),
            ):
                refused = self._check(strategy, item, key_id, n, factor, what)
                if refused is not None:
                    return refused
            self._sliding.hit(self._minute, key_id, cost=n)
            self._fixed.hit(self._day, key_id, cost=n)
            return RateDecision(True)

        with self._lock:
            return self._guarded(charge)

    def remaining_today(self, key_id: str) -> int:
        return int(self._fixed.get_window_stats(self._day, key_id).remaining)


class AuthFailureLimiter:
    """Failed authentications per client address in a moving minute: past ``per_minute`` the address is refused
    (429) before any key work, until the window has room again. Guesses at keys and floods of bad keys cost the
    server a hash each; this caps them. Clients behind one address share the allowance."""

    def __init__(self, per_minute: int, storage_url: str = "memory://") -> None:
        if per_minute < 1:
            raise ConfigError(f"auth_failures_per_minute must be >= 1, got {per_minute}")
        self.item = RateLimitItemPerMinute(per_minute)
        try:
            self._limiter = MovingWindowRateLimiter(_storage(storage_url))
        except Exception as e:  # limits raises several types for a bad or unreachable storage URL
            raise ConfigError(f"rate-limit storage {storage_url!r} is not usable: {e}") from None
        # addresses that failed recently: the only ones worth a window lookup, so a valid request pays one dict probe
        self._failed: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def blocked(self, client: str | None) -> int:
        """Seconds to wait if ``client`` has used up its failures (0: go ahead)."""
        if client is None or client not in self._failed or self._limiter.test(self.item, "auth", client):
            return 0
        reset = self._limiter.get_window_stats(self.item, "auth", client).reset_time
        return max(1, math.ceil(reset - time.time()))

    def failed(self, client: str | None) -> None:
        if client is None:
            return
        with self._lock:
            self._failed[client] = None
            self._failed.move_to_end(client)
            while len(self._failed) > 100_000:  # bounded: the oldest failing addresses are looked up no more
                self._failed.popitem(last=False)
        self._limiter.hit(self.item, "auth", client)
