"""Two gateway replicas sharing PostgreSQL (keys, audit, incidents) and Redis (rate limits): a key made on one works
on the other, a revocation on one is refused by the other on its next request, rate limits are shared, and the
audit log is one gapless chain."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from bastion.data import Dataset
from bastion.gateway import Gateway, create_app, parse_config
from bastion.gateway.store.sql import verify_rows


def _replica(model: Path, tmp: Path, pg: str, rps: int) -> Gateway:
    cfg = parse_config(
        {
            "models": {"digits": {"paths": [str(model)]}},
            "database": pg,
            "secret_file": str(tmp / "shared.secret"),
            "runtime": "torch",
            "rate": {
                "requests_per_second": rps,
                "inputs_per_minute": 1_000_000,
                "inputs_per_day": 10_000_000,
                "storage": "redis://127.0.0.1:6379/0",
            },
        },
        base=tmp,
    )
    return Gateway.from_config(cfg, monitors=False)


def test_replicas_share_keys_revocations_limits_and_one_audit_chain(
    digits_model_file: Path, tmp_path: Path, postgres_url: str, digits: Dataset
) -> None:
    a = _replica(digits_model_file, tmp_path, postgres_url, rps=3)
    b = _replica(digits_model_file, tmp_path, postgres_url, rps=3)
    try:
        ca, cb = TestClient(create_app(a)), TestClient(create_app(b))
        _, admin = a.keys.create("ops", ["admin"])
        record, key = a.keys.create("app", ["predict:labels"])
        body = {"inputs": digits.x_test[:2].tolist()}
        h = {"Authorization": f"Bearer {key}"}
        assert cb.post("/v1/models/digits/predict", json=body, headers=h).status_code == 200  # made on A, used on B
        # the request limit (3 a second) is one budget across replicas: A, A, B use it up, B is refused
        codes = [c.post("/v1/models/digits/predict", json=body, headers=h).status_code for c in (ca, ca, cb)]
        assert 429 in codes, codes
        # revoked through A's admin API: B refuses the key on its very next request
        r = ca.delete(f"/v1/admin/keys/{record.key_id}", headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 200
        assert cb.post("/v1/models/digits/predict", json=body, headers=h).status_code == 401
        verified, legacy, broken = verify_rows(a.store.iter_chain())
        assert broken is None and legacy == 0 and verified == a.store.count_events() >= 6
    finally:
        a.close()
        b.close()


def _wait(cond, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return bool(cond())


def test_threat_state_converges_across_replicas_over_the_state_bus(
    digits_model_file: Path, tmp_path: Path, postgres_url: str, digits: Dataset
) -> None:
    """An attack seen by replica A raises the key's level on B; a reset on B holds on A; a revocation on A drops the
    key's threat state on B: the round-robin attacker meets one state, not three."""
    import uuid

    from bastion.monitors.threat import ThreatLevel

    channel = f"bastion-test-{uuid.uuid4().hex[:8]}"

    def replica() -> Gateway:
        cfg = parse_config(
            {
                "models": {"digits": {"paths": [str(digits_model_file)]}},
                "database": postgres_url,
                "secret_file": str(tmp_path / "shared.secret"),
                "runtime": "torch",
                "rate": {"requests_per_second": 1000, "inputs_per_minute": 1_000_000, "inputs_per_day": 10_000_000},
                "sync": {"url": "redis://127.0.0.1:6379/0", "channel": channel},
            },
            base=tmp_path,
        )
        return Gateway.from_config(cfg, monitors=True)

    a, b = replica(), replica()
    try:
        ca = TestClient(create_app(a))
        _, admin = a.keys.create("ops", ["admin"])
        record, key = a.keys.create("attacker", ["predict:labels"])
        principal = b.keys.authenticate(key)
        same = digits.x_test[:1].repeat(64, 1, 1, 1)  # one input sent 64 times: a probing pattern
        for _ in range(3):
            ca.post(
                "/v1/models/digits/predict", json={"inputs": same.tolist()}, headers={"Authorization": f"Bearer {key}"}
            )
        assert a.level_for(principal) > ThreatLevel.NORMAL, a.status()
        assert _wait(lambda: b.level_for(principal) == a.level_for(principal)), (a.status(), b.status())
        # an administrator resets the key through B: A follows
        b.set_level(record.key_id, None, "ops", "false positive")
        assert _wait(lambda: a.level_for(principal) is ThreatLevel.NORMAL)
        # pinned on A: B serves the key at that level too
        r = ca.put(
            f"/v1/admin/threat/{record.key_id}",
            json={"level": "under_attack", "reason": "drill"},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert r.status_code == 200
        assert _wait(lambda: b.level_for(principal) is ThreatLevel.UNDER_ATTACK)
        a.forget_key(record.key_id)  # what a revocation on A does
        assert _wait(lambda: record.key_id not in b.threat.snapshot())
        assert b.bus is not None and b.bus.status()["connected"] and b.bus.received >= 3
    finally:
        a.close()
        b.close()
