"""Gateway replicas sharing state (issue 15): throughput and latency of 1, 2 and 3 `bastion serve` processes on one
PostgreSQL database and one Redis, against the same load, in one run.

    python bench/scale.py [--seconds 10] [--clients 8] [--pg postgresql+psycopg://postgres@127.0.0.1/postgres]

Each replica is a real `bastion serve` process (torch runtime, monitors on, one torch thread); the load is --clients
threads in this process, each sending one-input digits predictions round-robin over the replicas with keep-alive
connections. Rows: requests answered per second, p50 and p99 latency, and per-core efficiency (throughput per busy
core: this machine has few, so replicas and the load generator share them — the table says how many). The embedded
default (SQLite, in-process limits) is measured beside it as the reference for the shared backends' overhead.
Copy the output into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import yaml

from bastion.gateway.server import free_port


def _ready(port: int, timeout: float = 120.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            time.sleep(0.3)
    return False


def run(config: Path, replicas: int, key: str, body: dict, seconds: float, clients: int) -> dict[str, float]:
    ports = [free_port() for _ in range(replicas)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | {"BASTION_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bastion", "serve", "-c", str(config), "--port", str(p)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        for p in ports
    ]
    try:
        if not all(_ready(p) for p in ports):
            raise SystemExit("a replica did not start")
        latencies: list[float] = []
        errors = [0]
        stop = threading.Event()
        lock = threading.Lock()

        def client(n: int) -> None:
            mine: list[float] = []
            with httpx.Client(timeout=30.0) as http:
                i = n
                while not stop.is_set():
                    port = ports[i % replicas]
                    i += 1
                    t0 = time.perf_counter()
                    r = http.post(
                        f"http://127.0.0.1:{port}/v1/models/digits/predict",
                        json=body,
                        headers={"Authorization": f"Bearer {key}"},
                    )
                    if r.status_code == 200:
                        mine.append(time.perf_counter() - t0)
                    else:
                        errors[0] += 1
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(seconds)
        stop.set()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        lat = sorted(latencies)
        return {
            "rps": len(lat) / wall,
            "p50": statistics.median(lat) * 1e3 if lat else float("nan"),
            "p99": lat[int(0.99 * (len(lat) - 1))] * 1e3 if lat else float("nan"),
            "errors": errors[0],
        }
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = ap.parse_args()

    import sqlalchemy as sa

    from bastion.data import load_dataset
    from bastion.gateway.admin import open_admin
    from bastion.gateway.config import load_config
    from bastion.models.zoo import save_model, train_model

    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    digits = load_dataset("digits")
    trained = train_model(digits, epochs=5, seed=0)
    save_model(trained.module, trained.card, work / "digits.safetensors")
    body = {"inputs": digits.x_test[:1].tolist()}
    dbname = f"bench_scale_{uuid.uuid4().hex[:8]}"
    admin_engine = sa.create_engine(args.pg, isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{dbname}"'))
    shared_url = args.pg.rsplit("/", 1)[0] + f"/{dbname}"
    rate = {"requests_per_second": 1_000_000, "inputs_per_minute": 10**9, "inputs_per_day": 10**10}
    configs = {
        "embedded (SQLite, in-process limits)": {"database": str(work / "gw.db"), "rate": rate},
        "shared (PostgreSQL + Redis limits + state bus)": {
            "database": shared_url,
            "secret_file": str(work / "shared.secret"),
            "rate": {**rate, "storage": args.redis},
            "sync": {"url": args.redis},
        },
    }
    print(
        f"# {platform.node()} | {os.cpu_count()} cores | replicas: bastion serve, torch runtime, 1 torch thread each, "
        f"monitors on | load: {args.clients} client threads in the bench process, 1-input requests, "
        f"{args.seconds:g} s a row"
    )
    print(f"{'backend':48s} {'replicas':>8s} {'req/s':>8s} {'p50 ms':>7s} {'p99 ms':>7s} {'errors':>6s}")
    try:
        for label, extra in configs.items():
            cfg_path = work / f"{abs(hash(label))}.yaml"
            cfg_path.write_text(
                yaml.safe_dump(
                    {"models": {"digits": {"paths": [str(work / "digits.safetensors")]}}, "runtime": "torch", **extra}
                )
            )
            admin = open_admin(load_config(cfg_path))
            _, key = admin.keys.create(f"bench-{uuid.uuid4().hex[:6]}", ["predict:labels"])
            admin.close()
            counts = (1,) if label.startswith("embedded") else (1, 2, 3)
            for n in counts:
                r = run(cfg_path, n, key, body, args.seconds, args.clients)
                print(
                    f"{label:48s} {n:8d} {r['rps']:8.1f} {r['p50']:7.1f} {r['p99']:7.1f} {int(r['errors']):6d}",
                    flush=True,
                )
    finally:
        with admin_engine.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
        admin_engine.dispose()


if __name__ == "__main__":
    main()
