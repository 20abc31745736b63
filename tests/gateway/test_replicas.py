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


def _queries_to_flag(clients: list[TestClient], key: str, digits: Dataset, limit: int = 120) -> int:
    """Send near-duplicates of one image (a score-based attack's queries), one a request, round-robin over
    ``clients``; the number sent when a reply first comes back above normal (``limit`` + 1: never)."""
    import torch

    g = torch.Generator().manual_seed(0)
    x = digits.x_test[7:8]
    for i in range(limit):
        q = (x + 0.01 * torch.randn(x.shape, generator=g)).clamp(0, 1)
        r = clients[i % len(clients)].post(
            "/v1/models/digits/predict", json={"inputs": q.tolist()}, headers={"Authorization": f"Bearer {key}"}
        )
        assert r.status_code == 200, r.text
        if r.json()["threat_level"] != "normal":
            return i + 1
    return limit + 1


def test_a_prober_spread_round_robin_over_three_replicas_is_flagged_as_fast_as_against_one(
    digits_model_file: Path, tmp_path: Path, postgres_url: str, digits: Dataset
) -> None:
    """Per-key monitor state is the service's: every replica's monitors see every replica's requests (observation
    frames over Redis), so spreading the probe over three replicas buys the attacker nothing, and the alert is
    recorded once, not once per replica. With the sharing off, the same probe goes three times as long unseen."""
    import uuid

    def replica(share: bool, channel: str) -> Gateway:
        cfg = parse_config(
            {
                "models": {"digits": {"paths": [str(digits_model_file)]}},
                "database": postgres_url,
                "secret_file": str(tmp_path / "shared.secret"),
                "runtime": "torch",
                "rate": {"requests_per_second": 1000, "inputs_per_minute": 1_000_000, "inputs_per_day": 10_000_000},
                "sync": {"url": "redis://127.0.0.1:6379/0", "channel": channel, "share_monitors": share},
            },
            base=tmp_path,
        )
        return Gateway.from_config(cfg, monitors=True)

    runs: dict[str, int] = {}
    for label, share, n in (("one", True, 1), ("shared", True, 3), ("unshared", False, 3)):
        channel = f"bastion-test-{uuid.uuid4().hex[:8]}"
        gateways = [replica(share, channel) for _ in range(n)]
        try:
            _, key = gateways[0].keys.create(f"prober-{label}", ["predict:scores"])
            runs[label] = _queries_to_flag([TestClient(create_app(g)) for g in gateways], key, digits)
            if label == "shared":
                key_id = gateways[0].keys.authenticate(key).key_id
                probing = [i for i in gateways[0].store.list_incidents() if i.key_id == key_id and i.kind == "probing"]
                assert len(probing) == 1 and len(probing[0].evidence) == 1, probing  # recorded once
                assert all(g.bus.status()["observed"] > 0 and g.bus.status()["dropped"] == 0 for g in gateways)
        finally:
            for g in gateways:
                g.close()
    assert runs["one"] <= 30, runs
    assert runs["shared"] <= runs["one"] + 2, runs  # a frame may still be in flight when the next query lands
    assert runs["unshared"] >= 2 * runs["one"], runs
