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
