"""The audit log: one event per request, refused or answered, committed before the response — even across SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import yaml
from tests.gateway.conftest import Env

from bastion.data import Dataset
from bastion.gateway.server import free_port

GOOD = {"inputs": [[[[0.5] * 8] * 8]]}


def test_every_request_writes_one_event_with_what_happened(env: Env) -> None:
    c = env.client
    before = env.gateway.store.count_events()
    ok = c.post("/v1/models/digits/predict", json=GOOD, headers=env.h(env.scores))
    bad = c.post("/v1/models/digits/predict", json={"inputs": [[1.0]]}, headers=env.h(env.scores))
    anon = c.post("/v1/models/digits/predict", json=GOOD)
    c.get("/v1/admin/keys", headers=env.h(env.admin))
    events = list(env.gateway.store.iter_events(after_id=0))[before:]
    assert len(events) == 4
    e_ok, e_bad, e_anon, e_admin = events
    assert e_ok.request_id == ok.json()["request_id"] and e_ok.status == 200 and e_ok.decision == "answered"
    assert e_ok.output["labels"] == ok.json()["labels"] and e_ok.n_inputs == 1 and len(e_ok.input_hash or "") == 64
    assert e_ok.key_id == env.gateway.keys.authenticate(env.scores).key_id and e_ok.latency_ms > 0
    assert e_bad.status == 422 and e_bad.decision == "refused:bad_shape"
    assert e_bad.request_id == bad.json()["error"]["request_id"]
    assert e_anon.status == 401 and e_anon.key_id is None
    assert e_anon.request_id == anon.json()["error"]["request_id"]
    assert e_admin.decision == "admin:list_keys" and e_admin.status == 200


def test_same_input_same_hash(env: Env) -> None:
    c = env.client
    for _ in range(2):
        c.post("/v1/models/digits/predict", json=GOOD, headers=env.h(env.scores))
    a, b = list(env.gateway.store.iter_events())[-2:]
    assert a.input_hash == b.input_hash


def test_a_failed_audit_write_refuses_the_request(env: Env, monkeypatch: object) -> None:
    def broken(_event: object) -> int:
        raise OSError("disk full")

    env.gateway.audit.store.append = broken  # type: ignore[method-assign]
    r = env.client.post("/v1/models/digits/predict", json=GOOD, headers=env.h(env.scores))
    assert r.status_code == 503 and r.json()["error"]["code"] == "audit_unavailable" and "labels" not in r.text


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def _start(config: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bastion", "serve", "-c", str(config), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"bastion serve did not start: {proc.stderr.read().decode() if proc.stderr else ''}")


def test_sigkill_mid_load_loses_no_answered_request(digits_model_file: Path, digits: Dataset, tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "models": {"digits": {"paths": [str(digits_model_file)]}},
                "database": "audit.db",
                "rate": {"requests_per_second": 10_000, "inputs_per_minute": 10_000_000, "inputs_per_day": 10_000_000},
                "monitors": {"probing": {"enabled": False}},
            }
        )
    )
    made = _cli("keys", "create", "load", "--scope", "predict:scores", "-c", str(config), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    port = free_port()
    proc = _start(config, port)
    answered: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def load(worker: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            i = worker
            while not stop.is_set():
                body = {"inputs": digits.x_test[i % 300 : i % 300 + 2].tolist()}
                try:
                    r = client.post("/v1/models/digits/predict", json=body, headers={"Authorization": f"Bearer {key}"})
                except httpx.HTTPError:
                    return  # the server died under us: this request got no response
                data = r.json()
                rid = data["request_id"] if r.status_code == 200 else data["error"].get("request_id")
                assert rid, r.text
                with lock:
                    answered.append(rid)
                i += 7

    threads = [threading.Thread(target=load, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    time.sleep(2.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    stop.set()
    for t in threads:
        t.join(timeout=20)
    assert len(answered) > 50, "the load did not get going before the kill"
    proc = _start(config, port)  # the restarted service opens the same log
    try:
        out = tmp_path / "audit.jsonl"
        exported = _cli("audit", "export", "-c", str(config), "-o", str(out), cwd=tmp_path)
        assert exported.returncode == 0, exported.stderr
        logged = {json.loads(line)["request_id"] for line in out.read_text().splitlines()}
        missing = [rid for rid in answered if rid not in logged]
        assert missing == [], f"{len(missing)} of {len(answered)} answered requests have no audit event"
    finally:
        proc.kill()
        proc.wait(timeout=10)
