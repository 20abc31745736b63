"""Redis killed under a running gateway and started again: requests keep being answered with limits enforced per
replica, /healthz and /metrics say the gateway is degraded, the audit log records both changes, and the shared
state is used again once Redis is back."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from fastapi.testclient import TestClient

from bastion.data import Dataset
from bastion.gateway import Gateway, create_app, parse_config
from bastion.gateway.server import free_port


def _start_redis(port: int) -> subprocess.Popen[bytes]:
    import redis

    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            if client.ping():
                return proc
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"redis-server did not start on port {port}")


def _until(cond, timeout: float = 8.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.1)
    return bool(cond())


def test_redis_down_and_back_degrades_and_recovers(digits_model_file: Path, tmp_path: Path, digits: Dataset) -> None:
    port = free_port()
    redis_proc = _start_redis(port)
    url = f"redis://127.0.0.1:{port}/0"
    cfg = parse_config(
        {
            "models": {"digits": {"paths": [str(digits_model_file)]}},
            "database": str(tmp_path / "gw.db"),
            "runtime": "torch",
            "rate": {
                "requests_per_second": 5,
                "inputs_per_minute": 1_000_000,
                "inputs_per_day": 10_000_000,
                "storage": url,
            },
            "sync": {"url": url},
        },
        base=tmp_path,
    )
    gw = Gateway.from_config(cfg, monitors=False)
    try:
        client = TestClient(create_app(gw))
        _, key = gw.keys.create("app", ["predict:labels"])
        h = {"Authorization": f"Bearer {key}"}
        body = {"inputs": digits.x_test[:1].tolist()}
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.post("/v1/models/digits/predict", json=body, headers=h).status_code == 200

        redis_proc.kill()
        redis_proc.wait()
        codes = [client.post("/v1/models/digits/predict", json=body, headers=h).status_code for _ in range(12)]
        assert 500 not in codes and 503 not in codes and codes[0] == 200, codes
        assert 429 in codes  # the limits still hold, on this replica's own counters
        health = client.get("/healthz").json()
        assert health["status"] == "degraded" and any("rate-limit storage" in d for d in health["degraded"])
        assert _until(lambda: any("state bus" in d for d in client.get("/healthz").json().get("degraded", [])))
        _, admin = gw.keys.create("ops", ["admin"])
        metrics = client.get("/metrics", headers={"Authorization": f"Bearer {admin}"}).text
        assert 'bastion_degraded{component="rate_limits"} 1.0' in metrics

        redis_proc = _start_redis(port)
        time.sleep(gw.limiter.RETRY_S + 0.2)
        assert _until(lambda: client.post("/v1/models/digits/predict", json=body, headers=h).status_code == 200)
        assert _until(lambda: client.get("/healthz").json() == {"status": "ok"}), client.get("/healthz").json()
        eng = sa.create_engine(f"sqlite:///{tmp_path / 'gw.db'}")
        with eng.connect() as c:
            rows = c.execute(
                sa.text("select decision, output from audit_events where decision like 'service:%' order by event_id")
            ).all()
        eng.dispose()
        decisions = [d for d, _ in rows]
        assert decisions[:1] == ["service:degraded"] and "service:restored" in decisions
        assert json.loads(rows[0][1])["component"] == "rate_limits"
    finally:
        gw.close()
        redis_proc.kill()
        redis_proc.wait()


def _pg_bin(tool: str) -> str:
    import glob

    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    if not found:
        raise AssertionError(f"PostgreSQL's {tool} is not installed (scripts/services.sh installs postgresql)")
    return found[-1]


def _as_postgres(args: list[str]) -> list[str]:
    import os

    return ["runuser", "-u", "postgres", "--", *args] if os.getuid() == 0 else args


@contextlib.contextmanager
def _throwaway_postgres() -> Iterator[tuple[int, list[str], list[str]]]:
    """A PostgreSQL server of its own (port, start command, stop command), so a test can stop it under a gateway."""
    import os
    import shutil
    import tempfile

    data = Path(tempfile.mkdtemp(prefix="bastion-pg-"))  # under /tmp: pytest's folders are closed to other users
    if os.getuid() == 0:
        os.chown(data, *_uid_gid("postgres"))
    subprocess.run(
        _as_postgres([_pg_bin("initdb"), "-D", str(data / "d"), "-A", "trust", "-U", "postgres"]),
        check=True,
        capture_output=True,
    )
    port = free_port()
    ctl = [_pg_bin("pg_ctl"), "-D", str(data / "d"), "-l", str(data / "log")]
    start = _as_postgres([*ctl, "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "-w", "start"])
    stop = _as_postgres([*ctl, "-m", "immediate", "-w", "stop"])
    subprocess.run(start, check=True, capture_output=True)
    try:
        yield port, start, stop
    finally:
        subprocess.run(stop, capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


def test_postgresql_down_means_503_never_an_unaudited_answer(
    digits_model_file: Path, tmp_path: Path, digits: Dataset
) -> None:
    """A throwaway PostgreSQL server is stopped under the gateway and started again: while it is down every predict
    gets 503 (the audit write cannot happen, so no answer goes out), /healthz says so, and afterwards the gateway
    answers again with one unbroken audit chain holding every answer it gave."""
    from bastion.gateway.store.sql import verify_rows

    with _throwaway_postgres() as (port, start, stop):
        cfg = parse_config(
            {
                "models": {"digits": {"paths": [str(digits_model_file)]}},
                "database": f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres",
                "secret_file": str(tmp_path / "gw.secret"),
                "runtime": "torch",
                "rate": {"requests_per_second": 1000, "inputs_per_minute": 1_000_000, "inputs_per_day": 10_000_000},
            },
            base=tmp_path,
        )
        gw = Gateway.from_config(cfg, monitors=False)
        try:
            client = TestClient(create_app(gw))
            _, key = gw.keys.create("app", ["predict:labels"])
            h = {"Authorization": f"Bearer {key}"}
            body = {"inputs": digits.x_test[:1].tolist()}
            answered = 0
            for _ in range(5):
                answered += client.post("/v1/models/digits/predict", json=body, headers=h).status_code == 200
            subprocess.run(stop, check=True, capture_output=True)
            down = [client.post("/v1/models/digits/predict", json=body, headers=h) for _ in range(3)]
            assert [r.status_code for r in down] == [503, 503, 503]
            assert all("Traceback" not in r.text for r in down)
            health = client.get("/healthz").json()
            assert health["status"] == "degraded" and any("database" in d for d in health["degraded"])
            subprocess.run(start, check=True, capture_output=True)
            assert _until(lambda: client.post("/v1/models/digits/predict", json=body, headers=h).status_code == 200)
            answered += 1
            for _ in range(3):
                answered += client.post("/v1/models/digits/predict", json=body, headers=h).status_code == 200
            events = list(gw.store.iter_events(0))
            assert sum(e.decision == "answered" for e in events) == answered == 9
            assert verify_rows(gw.store.iter_chain())[2] is None
        finally:
            gw.close()


def test_fail_open_serves_known_keys_and_loses_nothing_while_postgresql_is_down(
    digits_model_file: Path, tmp_path: Path, digits: Dataset
) -> None:
    """database_failure.mode: serve. With PostgreSQL stopped, a key verified before the outage is answered, one
    never seen is refused (503: it cannot be checked), and a probing attack during the outage still raises the
    key's level; the audit events, the alert's incident and the level change wait in the spool and reach the
    database when it is back, in one unbroken chain with the degraded/restored events around them."""
    from bastion.gateway.store.sql import verify_rows

    with _throwaway_postgres() as (port, start, stop):
        cfg = parse_config(
            {
                "models": {"digits": {"paths": [str(digits_model_file)]}},
                "database": f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres",
                "secret_file": str(tmp_path / "gw.secret"),
                "runtime": "torch",
                "rate": {"requests_per_second": 1000, "inputs_per_minute": 1_000_000, "inputs_per_day": 10_000_000},
                "database_failure": {"mode": "serve", "spool_dir": str(tmp_path / "spool")},
            },
            base=tmp_path,
        )
        gw = Gateway.from_config(cfg, monitors=True)
        gw.DRAIN_EVERY_S = 0.2
        try:
            client = TestClient(create_app(gw))
            known_rec, known = gw.keys.create("app", ["predict:labels"])
            _, unseen = gw.keys.create("other", ["predict:labels"])
            h = {"Authorization": f"Bearer {known}"}
            body = {"inputs": digits.x_test[:1].tolist()}
            assert client.post("/v1/models/digits/predict", json=body, headers=h).status_code == 200
            subprocess.run(stop, check=True, capture_output=True)
            during = [client.post("/v1/models/digits/predict", json=body, headers=h) for _ in range(3)]
            assert [r.status_code for r in during] == [200, 200, 200]
            same = {"inputs": digits.x_test[:1].repeat(64, 1, 1, 1).tolist()}  # a probing pattern, during the outage
            attack = [client.post("/v1/models/digits/predict", json=same, headers=h) for _ in range(3)]
            assert attack[-1].status_code == 200 and attack[-1].json()["threat_level"] == "under_attack"
            refused = client.post("/v1/models/digits/predict", json=body, headers={"Authorization": f"Bearer {unseen}"})
            assert refused.status_code == 503 and "Traceback" not in refused.text
            health = client.get("/healthz").json()
            assert health["status"] == "degraded" and any("spooled" in d for d in health["degraded"]), health
            assert gw.spool is not None and gw.spool.pending() >= 7
            ids = [r.json()["request_id"] for r in during + attack]
            subprocess.run(start, check=True, capture_output=True)
            assert _until(lambda: client.get("/healthz").json()["status"] == "ok", timeout=20), client.get("/healthz")
            events = list(gw.store.iter_events(0))
            by_id = {e.request_id: e for e in events}
            assert all(i in by_id and by_id[i].decision == "answered" for i in ids)
            assert by_id[refused.json()["error"]["request_id"]].status == 503
            decisions = [e.decision for e in events]
            assert decisions.index("service:degraded") < decisions.index("service:restored")
            assert verify_rows(gw.store.iter_chain())[2] is None
            probing = [i for i in gw.store.list_incidents() if i.key_id == known_rec.key_id and i.kind == "probing"]
            assert probing and probing[0].actions, probing  # the incident, with the level change noted on it
            assert any(c.key_id == known_rec.key_id and c.new == "under_attack" for c in gw.store.list_level_changes())
            assert gw.spool.pending() == 0
        finally:
            gw.close()


def _uid_gid(user: str) -> tuple[int, int]:
    import pwd

    p = pwd.getpwnam(user)
    return p.pw_uid, p.pw_gid
