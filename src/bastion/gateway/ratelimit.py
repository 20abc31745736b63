"""Per-key rate limits over the ``limits`` library: a burst of requests, a sustained rate and a daily budget of inputs.

Three windows per key: requests per second (a moving window: a burst allowance that is checked before the body is
even parsed, so malformed floods are capped too), inputs per minute (a sliding-window counter: the sustained rate)
and inputs per day (a fixed daily window: the query budget). Inputs, not requests, are what an attacker spends, so a
batch of 100 costs 100. A threat-level factor below 1 shrinks every allowance without resetting the counters.

The storage is ``limits``' in-process memory by default; a ``redis://`` URL shares counters between replicas.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
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
    """Burst, sustained and daily limits per key id."""

    def __init__(
        self,
        requests_per_second: int,
        inputs_per_minute: int,
        inputs_per_day: int,
        storage_url: str = "memory://",
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
        self._moving = MovingWindowRateLimiter(self._storage)
        self._sliding = SlidingWindowCounterRateLimiter(self._storage)
        self._fixed = FixedWindowRateLimiter(self._storage)
        self._lock = threading.Lock()

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
        with self._lock:
            refused = self._check(self._moving, self._burst, key_id, 1, factor, "requests per second")
            if refused is not None:
                return refused
            self._moving.hit(self._burst, key_id)
        return RateDecision(True)

    def charge_inputs(self, key_id: str, n: int, factor: float = 1.0) -> RateDecision:
        """Charge ``n`` inputs against the sustained rate and the daily budget, or neither."""
        with self._lock:
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
