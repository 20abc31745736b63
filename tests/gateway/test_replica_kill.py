"""Two real `bastion serve` replicas on one PostgreSQL and one Redis under load; one is SIGKILLed mid-load. Every
answer a client received has its audit event, the survivor keeps answering, and the chain is one, unbroken."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import yaml

from bastion.data import Dataset
from bastion.gateway.server import free_port


def _serve(config: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return subprocess.Popen(
        [sys.executable, "-m", "bastion", "serve", "-c", str(config), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )


def _ready(port: int, timeout: float = 90.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            time.sleep(0.2)
    return False


def test_a_replica_killed_mid_load_loses_no_committed_audit_event(
    digits_model_file: Path, tmp_path: Path, postgres_url: str, digits: Dataset
) -> None:
    from bastion.gateway.admin import open_admin
    from bastion.gateway.config import load_config
    from bastion.gateway.store.sql import verify_rows

    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "models": {"digits": {"paths": [str(digits_model_file)]}},
                "database": postgres_url,
                "secret_file": str(tmp_path / "shared.secret"),
                "runtime": "torch",
                "rate": {"requests_per_second": 10_000, "inputs_per_minute": 10_000_000, "inputs_per_day": 10**8},
                "monitors": {  # the load repeats one input: no monitor should turn it into a security event here
                    m: {"enabled": False}
                    for m in ("adversarial_inputs", "confidence", "extraction", "input_distribution", "probing")
                },
            }
        )
    )
    admin = open_admin(load_config(config))
    _, key = admin.keys.create("load", ["predict:labels"])
    ports = [free_port(), free_port()]
    procs = [_serve(config, p) for p in ports]
    try:
        assert all(_ready(p) for p in ports), "the replicas did not start"
        answered: list[str] = []
        errors: list[str] = []
        stop = threading.Event()
        body = {"inputs": digits.x_test[:2].tolist()}

        def client(n: int) -> None:
            with httpx.Client(timeout=10.0) as http:
                i = n
                while not stop.is_set():
                    port = ports[i % 2]
                    i += 1
                    try:
                        r = http.post(
                            f"http://127.0.0.1:{port}/v1/models/digits/predict",
                            json=body,
                            headers={"Authorization": f"Bearer {key}"},
                        )
                    except httpx.HTTPError:
                        continue  # the killed replica: connection refused or reset, never an answer
                    if r.status_code == 200:
                        answered.append(r.json()["request_id"])
                    else:
                        errors.append(f"{r.status_code} {r.text[:100]}")

        workers = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for w in workers:
            w.start()
        time.sleep(3.0)
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
        before_kill = len(answered)
        time.sleep(2.0)
        stop.set()
        for w in workers:
            w.join()
        assert errors == [], errors[:3]
        assert before_kill > 10 and len(answered) > before_kill  # the survivor kept answering
        audited = {e.request_id for e in admin.store.iter_events(0) if e.decision == "answered"}
        missing = set(answered) - audited
        assert not missing, f"{len(missing)} answers have no audit event"
        assert verify_rows(admin.store.iter_chain())[2] is None
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
        admin.close()
