"""Rate limits per key: a request burst, a sustained rate and a daily budget counted in inputs."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from tests.gateway.conftest import Env

from bastion.errors import ConfigError
from bastion.gateway.ratelimit import RateLimiter


def _batch(n: int) -> dict[str, object]:
    return {"inputs": [[[[0.5] * 8] * 8]] * n}


def test_burst_gives_429_with_retry_after(make_env: Callable[..., Env]) -> None:
    env = make_env(rate={"requests_per_second": 5, "inputs_per_minute": 1000, "inputs_per_day": 1000})
    codes = [env.client.post("/v1/models/digits/predict", json=_batch(1), headers=env.h(env.scores)) for _ in range(8)]
    assert [r.status_code for r in codes[:5]] == [200] * 5
    limited = codes[5]
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert "requests per second" in limited.json()["error"]["message"]
    # another key is not affected
    assert env.client.post("/v1/models/digits/predict", json=_batch(1), headers=env.h(env.labels)).status_code == 200


def test_daily_budget_counts_inputs_not_requests(make_env: Callable[..., Env]) -> None:
    env = make_env(rate={"requests_per_second": 100, "inputs_per_minute": 10_000, "inputs_per_day": 250})
    post = lambda n: env.client.post("/v1/models/digits/predict", json=_batch(n), headers=env.h(env.scores))  # noqa: E731
    assert post(100).status_code == 200 and post(100).status_code == 200
    r = post(100)  # 300 > 250
    assert r.status_code == 429 and "inputs per day" in r.json()["error"]["message"]
    assert post(50).status_code == 200  # exactly the 50 left
    assert post(1).status_code == 429
    assert env.gateway.limiter.remaining_today(env.gateway.keys.authenticate(env.scores).key_id) == 0


def test_a_batch_larger_than_the_whole_allowance_is_413() -> None:
    rl = RateLimiter(10, 100, 1000)
    d = rl.charge_inputs("k", 150)
    assert not d.allowed and d.too_large and "send smaller batches" in d.message
    assert rl.charge_inputs("k", 100).allowed  # nothing was charged by the refused batch


def test_threat_factor_shrinks_the_allowance_without_resetting_counters() -> None:
    rl = RateLimiter(10, 100, 1000)
    assert rl.charge_inputs("k", 40).allowed
    assert not rl.charge_inputs("k", 20, factor=0.5).allowed  # 40 + 20 > 50
    assert rl.charge_inputs("k", 10, factor=0.5).allowed
    assert rl.charge_inputs("k", 50).allowed  # back at full allowance: 100 used


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_limits_are_refused(bad: object) -> None:
    with pytest.raises(ConfigError, match="positive integer"):
        RateLimiter(bad, 10, 10)  # type: ignore[arg-type]


def test_the_memory_storage_sweeps_inline_without_starting_threads() -> None:
    import threading
    import time

    from bastion.gateway.ratelimit import _InlineExpiryMemory

    store = _InlineExpiryMemory()
    before = threading.active_count()
    for i in range(200):
        store.incr(f"k{i}", expiry=0.05)
    assert threading.active_count() == before  # the stock storage starts a timer thread here
    assert store.get("k0") == 1
    time.sleep(0.1)
    store._next_sweep = 0.0  # the next write sweeps (at most once a second otherwise)
    store.incr("fresh", expiry=10)
    assert len(store.storage) == 1 and store.get("fresh") == 1  # the 200 expired counters are gone
