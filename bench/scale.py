"""Gateway replicas sharing state (issue 15): throughput and latency of 1, 2 and 3 `bastion serve` processes on one
PostgreSQL database and one Redis, against the same load, in one run.

    python bench/scale.py [--part throughput,mix,faults,assess] [--seconds 10] [--clients 8] [--pg URL]

Each replica is a real `bastion serve` process (torch runtime, monitors on, one torch thread); the load is --clients
threads in this process, each sending one-input digits predictions round-robin over the replicas with keep-alive
connections. Rows: requests answered per second, p50 and p99 latency, and per-core efficiency (throughput per busy
core: this machine has few, so replicas and the load generator share them — the table says how many). The embedded
default (SQLite, in-process limits) is measured beside it as the reference for the shared backends' overhead.

--part mix: 50 concurrent clients over 3 shared replicas: 45 benign (open loop, --benign-rate requests a second
each, random test images) and 5 probing attackers (closed loop, as fast as they are let, near-duplicates with fresh
noise each query, round-robin over the replicas). Benign p99 against its idle value (one benign client alone), every
attacker flagged (a probing incident for its key), benign keys flagged, responses >= 500.

--part faults: 3 shared replicas on a throwaway redis-server under load; Redis killed at 3 s and restarted at 6 s,
then one replica SIGKILLed: responses >= 500, /healthz degraded seen during the outage and clear after, a threat
pin on one replica seen on the others after Redis returns, every answered request_id in the audit table, the chain
verified.

--part assess: the same policy in one process, on a process pool of 2 and on a local Ray cluster of 2 CPUs: seconds,
speed-up and whether the figures are identical.

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
from typing import Any

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


def start_replicas(config: Path, replicas: int) -> tuple[list[int], list[subprocess.Popen[bytes]]]:
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
    if not all(_ready(p) for p in ports):
        stop_replicas(procs)
        raise SystemExit("a replica did not start")
    return ports, procs


def stop_replicas(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()


def run(config: Path, replicas: int, key: str, body: dict, seconds: float, clients: int) -> dict[str, float]:
    ports, procs = start_replicas(config, replicas)
    try:
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
        _run_for(threads, stop, seconds)
        wall = time.perf_counter() - t0
        lat = sorted(latencies)
        return {
            "rps": len(lat) / wall,
            "p50": statistics.median(lat) * 1e3 if lat else float("nan"),
            "p99": lat[int(0.99 * (len(lat) - 1))] * 1e3 if lat else float("nan"),
            "errors": errors[0],
        }
    finally:
        stop_replicas(procs)


def _threads_report() -> str:
    return f"{platform.node()} | {os.cpu_count()} cores | python {platform.python_version()}"


def _percentile(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[int(q * (len(v) - 1))] * 1e3 if v else float("nan")


def part_throughput(work: Path, model: Path, body: dict, shared: dict, args: argparse.Namespace) -> None:
    from bastion.gateway.admin import open_admin
    from bastion.gateway.config import load_config

    rate = {"requests_per_second": 1_000_000, "inputs_per_minute": 10**9, "inputs_per_day": 10**10}
    configs = {
        "embedded (SQLite, in-process limits)": {"database": str(work / "gw.db"), "rate": rate},
        "shared (PG + Redis, monitors shared)": {**shared, "rate": {**rate, "storage": args.redis}},
        "shared (PG + Redis, monitors per replica)": {
            **shared,
            "rate": {**rate, "storage": args.redis},
            "sync": {"url": args.redis, "share_monitors": False},
        },
    }
    print(
        f"\n## throughput | {_threads_report()} | replicas: bastion serve, torch runtime, 1 torch thread each, "
        f"monitors on | load: {args.clients} closed-loop client threads in the bench process, 1-input requests, "
        f"{args.seconds:g} s a row"
    )
    print(f"{'backend':48s} {'replicas':>8s} {'req/s':>8s} {'p50 ms':>7s} {'p99 ms':>7s} {'errors':>6s}")
    for i, (label, extra) in enumerate(configs.items()):
        cfg_path = work / f"throughput{i}.yaml"
        cfg_path.write_text(
            yaml.safe_dump({"models": {"digits": {"paths": [str(model)]}}, "runtime": "torch", **extra})
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


def _benign_clients(
    ports: list[int], keys: list[str], images: list, rate: float, stop: threading.Event, out: dict
) -> list[threading.Thread]:
    """Open-loop benign clients: each sends a random test image every 1/rate s (jittered), to replicas in turn."""
    import random

    def client(n: int, key: str) -> None:
        rnd = random.Random(n)
        lat: list[float] = []
        with httpx.Client(timeout=30.0) as http:
            nxt = time.perf_counter() + rnd.random() / rate
            i = n
            while not stop.is_set():
                delay = nxt - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                nxt += rnd.expovariate(rate)
                port = ports[i % len(ports)]
                i += 1
                t0 = time.perf_counter()
                try:
                    r = http.post(
                        f"http://127.0.0.1:{port}/v1/models/digits/predict",
                        json={"inputs": [images[rnd.randrange(len(images))]]},
                        headers={"Authorization": f"Bearer {key}"},
                    )
                except httpx.HTTPError:
                    out["conn_errors"] += 1
                    continue
                out["codes"][r.status_code] = out["codes"].get(r.status_code, 0) + 1
                if r.status_code == 200:
                    lat.append(time.perf_counter() - t0)
                    out["answered"].append(r.json()["request_id"])
        with out["lock"]:
            out["latency"].extend(lat)

    return [threading.Thread(target=client, args=(n, k)) for n, k in enumerate(keys)]


def _attackers(ports: list[int], keys: list[str], image, stop: threading.Event, out: dict) -> list[threading.Thread]:
    """Closed-loop probing attackers: near-duplicates of one image with fresh noise (sigma 0.01-0.05) each query,
    one input a request, round-robin over the replicas, as fast as the gateway lets them."""
    import torch

    def attacker(n: int, key: str) -> None:
        g = torch.Generator().manual_seed(1000 + n)
        x = torch.tensor(image)
        sigma = 0.01 + 0.01 * n
        with httpx.Client(timeout=30.0) as http:
            i = n
            while not stop.is_set():
                q = (x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1)
                port = ports[i % len(ports)]
                i += 1
                try:
                    r = http.post(
                        f"http://127.0.0.1:{port}/v1/models/digits/predict",
                        json={"inputs": [q.tolist()]},
                        headers={"Authorization": f"Bearer {key}"},
                    )
                except httpx.HTTPError:
                    out["conn_errors"] += 1
                    continue
                out["codes"][r.status_code] = out["codes"].get(r.status_code, 0) + 1
                if r.status_code == 429:
                    time.sleep(min(float(r.headers.get("Retry-After", "1")), 1.0))

    return [threading.Thread(target=attacker, args=(n, k)) for n, k in enumerate(keys)]


def _clients(
    role: str, ports: list[int], keys: list[str], images: list, rate: float, stop: threading.Event, out: dict
) -> list[threading.Thread]:
    if role == "attackers":
        return _attackers(ports, keys, images[0], stop, out)
    return _benign_clients(ports, keys, images, rate, stop, out)


def _run_for(threads: list[threading.Thread], stop: threading.Event, seconds: float) -> None:
    """Start ``threads``, let them run ``seconds``, stop them and wait for them."""
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()


def _group(role: str, ports: list[int], keys: list[str], images: list, rate: float, seconds: float, q: Any) -> None:
    """One group of clients in a process of its own (``--client-processes``): what each client measures is then the
    server's latency, not the wait for this process's GIL behind another group's threads (a real client is its own
    process). Sends back the group's counts."""
    out, stop = _new_counts(), threading.Event()
    _run_for(_clients(role, ports, keys, images, rate, stop, out), stop, seconds)
    q.put({k: v for k, v in out.items() if k != "lock"})


def _run_groups(
    groups: list[tuple[str, list[str], float]], ports: list[int], images: list, seconds: float, separate: bool
) -> list[dict]:
    """Run client groups (role, keys, rate) for ``seconds``: each in its own spawned process when ``separate``, else
    as threads of this process; their counts, in order."""
    if separate:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        queues = [ctx.Queue() for _ in groups]
        procs = [
            ctx.Process(target=_group, args=(role, ports, keys, images, rate, seconds, q))
            for (role, keys, rate), q in zip(groups, queues, strict=True)
        ]
        for pr in procs:
            pr.start()
        results = [q.get(timeout=seconds + 120) for q in queues]
        for pr in procs:
            pr.join(timeout=30)
        return results
    counts = [_new_counts() for _ in groups]
    stop = threading.Event()
    threads = [
        t
        for (role, keys, rate), out in zip(groups, counts, strict=True)
        for t in _clients(role, ports, keys, images, rate, stop, out)
    ]
    _run_for(threads, stop, seconds)
    return counts


def _flagged(port: int, admin_key: str) -> dict[str, str]:
    """Keys with a probing incident, and the message of its first alert."""
    r = httpx.get(
        f"http://127.0.0.1:{port}/v1/admin/incidents", headers={"Authorization": f"Bearer {admin_key}"}, timeout=30
    )
    return {
        i["key_id"]: (i["evidence"][0]["message"] if i["evidence"] else "")
        for i in r.json()["incidents"]
        if i["kind"] == "probing" and i["key_id"]
    }


def _new_counts() -> dict:
    return {"codes": {}, "latency": [], "answered": [], "conn_errors": 0, "lock": threading.Lock()}


def part_mix(work: Path, model: Path, shared: dict, images: list, args: argparse.Namespace) -> None:
    from bastion.gateway.admin import open_admin
    from bastion.gateway.config import load_config

    cfg_path = work / "mix.yaml"
    rate = {"requests_per_second": 20, "inputs_per_minute": 100_000, "inputs_per_day": 10**7, "storage": args.redis}
    shared = {**shared, "sync": {"url": args.redis, "share_monitors": args.share_monitors == "on"}}
    cfg_path.write_text(
        yaml.safe_dump(
            {
                "models": {"digits": {"paths": [str(model)]}},
                "runtime": "torch",
                **shared,
                "rate": rate,
                "monitors": {m: {"enabled": False} for m in args.monitors_off.split(",") if m},
            }
        )
    )
    admin = open_admin(load_config(cfg_path))
    _, admin_key = admin.keys.create("ops", ["admin"])
    benign = [admin.keys.create(f"app-{i}", ["predict:scores"]) for i in range(45)]
    attack = [admin.keys.create(f"attacker-{i}", ["predict:scores"]) for i in range(5)]
    admin.close()
    ports, procs = start_replicas(cfg_path, 3)
    try:
        separate = args.client_processes == "on"
        benign_keys, attack_keys = [k for _, k in benign], [k for _, k in attack]
        # 20 a second: a p99 to trust
        (idle,) = _run_groups([("benign", benign_keys[:1], 20.0)], ports, images, args.seconds, separate)
        (alone,) = _run_groups([("benign", benign_keys, args.benign_rate)], ports, images, args.seconds, separate)
        t0 = time.perf_counter()
        loaded, hostile = _run_groups(
            [("benign", benign_keys, args.benign_rate), ("attackers", attack_keys, 0.0)],
            ports,
            images,
            args.seconds * 2,
            separate,
        )
        wall = time.perf_counter() - t0
        time.sleep(1.0)
        flagged = _flagged(ports[0], admin_key)
        attackers = {r.key_id for r, _ in attack}
        benign_ids = {r.key_id for r, _ in benign}
        p99_idle, p99_loaded = _percentile(idle["latency"], 0.99), _percentile(loaded["latency"], 0.99)
        fivexx = sum(v for c, v in {**loaded["codes"]}.items() if c >= 500) + sum(
            v for c, v in hostile["codes"].items() if c >= 500
        )
        print(
            f"\n## 50 clients over 3 shared replicas (monitors shared: {args.share_monitors}; off: {args.monitors_off or 'none'}) | {_threads_report()} | 45 benign at {args.benign_rate:g} "
            f"req/s each (open loop) + 5 probing attackers (closed loop), {args.seconds * 2:g} s; idle = 1 benign "
            f"client alone at 20 req/s, {args.seconds:g} s; client groups in "
            + ("processes of their own" if separate else "threads of the bench process")
        )
        print(
            f"benign p50 idle {_percentile(idle['latency'], 0.5):.1f} ms, loaded {_percentile(loaded['latency'], 0.5):.1f} ms"
        )
        print(
            f"benign p99 idle {p99_idle:.1f} ms, loaded {p99_loaded:.1f} ms: ratio {p99_loaded / p99_idle:.2f} (target <= 2)"
        )
        print(
            f"the 45 benign clients alone ({args.seconds:g} s, no attackers): p50 {_percentile(alone['latency'], 0.5):.1f} "
            f"ms, p99 {_percentile(alone['latency'], 0.99):.1f} ms"
        )
        print(
            f"benign answered {len(loaded['latency'])} ({len(loaded['latency']) / wall:.1f} req/s), codes {loaded['codes']}"
        )
        print(f"attacker codes {hostile['codes']}")
        print(
            f"attackers flagged {len(flagged.keys() & attackers)}/{len(attackers)}; benign keys flagged "
            f"{len(flagged.keys() & benign_ids)}/45"
        )
        for k in sorted(flagged.keys() & benign_ids):
            print(f"  benign key {k}: {flagged[k]}")
        print(f"responses >= 500: {fivexx}; connection errors: {loaded['conn_errors'] + hostile['conn_errors']}")
    finally:
        stop_replicas(procs)


def _redis_server(port: int) -> subprocess.Popen[bytes]:
    import redis

    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            if client.ping():
                return proc
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"redis-server did not start on port {port}")


def part_faults(work: Path, model: Path, shared: dict, images: list, args: argparse.Namespace) -> None:
    from bastion.gateway.admin import open_admin
    from bastion.gateway.config import load_config
    from bastion.gateway.store.sql import verify_rows

    rport = free_port()
    redis_url = f"redis://127.0.0.1:{rport}/0"
    rproc = _redis_server(rport)
    cfg_path = work / "faults.yaml"
    cfg = {
        "models": {"digits": {"paths": [str(model)]}},
        "runtime": "torch",
        **shared,
        "rate": {
            "requests_per_second": 1000,
            "inputs_per_minute": 10**7,
            "inputs_per_day": 10**9,
            "storage": redis_url,
        },
        "sync": {"url": redis_url},
    }
    cfg_path.write_text(yaml.safe_dump(cfg))
    admin = open_admin(load_config(cfg_path))
    _, admin_key = admin.keys.create("ops", ["admin"])
    keys = [admin.keys.create(f"load-{i}", ["predict:labels"]) for i in range(8)]
    audited_before = {e.request_id for e in admin.store.iter_events(0)}
    ports, procs = start_replicas(cfg_path, 3)
    counts = _new_counts()
    stop = threading.Event()
    degraded_seen, healthz_5xx = set(), [0]

    def watch() -> None:
        with httpx.Client(timeout=5.0) as http:
            while not stop.is_set():
                for p in ports:
                    try:
                        h = http.get(f"http://127.0.0.1:{p}/healthz")
                    except httpx.HTTPError:
                        continue
                    if h.status_code >= 500 and h.status_code != 503:
                        healthz_5xx[0] += 1
                    if h.json().get("status") == "degraded":
                        degraded_seen.add(p)
                time.sleep(0.2)

    try:
        threads = _benign_clients(ports, [k for _, k in keys], images, args.benign_rate * 4, stop, counts)
        threads.append(threading.Thread(target=watch))
        for t in threads:
            t.start()
        time.sleep(3.0)
        rproc.kill()
        rproc.wait()
        time.sleep(3.0)
        rproc = _redis_server(rport)
        time.sleep(3.0)
        procs[2].send_signal(signal.SIGKILL)
        procs[2].wait()
        killed_at = len(counts["answered"])
        time.sleep(3.0)
        stop.set()
        for t in threads:
            t.join()
        time.sleep(3.0)  # the survivors retry Redis every 2 s
        health = [httpx.get(f"http://127.0.0.1:{p}/healthz", timeout=5).json()["status"] for p in ports[:2]]
        # state converges: a pin on replica 0 is what replica 1 serves the key at
        target = keys[0][0].key_id
        h = {"Authorization": f"Bearer {admin_key}"}
        httpx.put(
            f"http://127.0.0.1:{ports[0]}/v1/admin/threat/{target}",
            json={"level": "elevated", "reason": "drill"},
            headers=h,
            timeout=10,
        )
        converged = False
        for _ in range(50):
            levels = httpx.get(f"http://127.0.0.1:{ports[1]}/v1/admin/threat", headers=h, timeout=10).json()
            if levels.get("keys", {}).get(target, {}).get("level") == "elevated":
                converged = True
                break
            time.sleep(0.1)
        audited = {e.request_id for e in admin.store.iter_events(0)} - audited_before
        missing = set(counts["answered"]) - audited
        broken = verify_rows(admin.store.iter_chain())[2]
        fivexx = sum(v for c, v in counts["codes"].items() if c >= 500)
        print(
            f"\n## faults: 3 shared replicas, 8 clients at {args.benign_rate * 4:g} req/s each | {_threads_report()} | "
            "Redis killed at 3 s, back at 6 s; replica 3 SIGKILLed at 9 s; 12 s of load"
        )
        print(
            f"answered {len(counts['answered'])} (at the kill: {killed_at}); codes {counts['codes']}; connection errors {counts['conn_errors']} (the killed replica)"
        )
        print(
            f"responses >= 500: {fivexx}; /healthz degraded seen on {len(degraded_seen)}/3 replicas during the outage; after: {health}"
        )
        print(
            f"answered requests without an audit event: {len(missing)}; audit chain: {'intact' if broken is None else f'broken at {broken}'}"
        )
        print(f"a pin on replica 1 served by replica 2 after Redis returned: {converged}")
    finally:
        stop.set()
        stop_replicas(procs)
        rproc.kill()
        admin.close()


def part_assess(args: argparse.Namespace) -> None:
    import json

    import torch

    from bastion.assess import parse_policy, run_assessment
    from bastion.assess.executors import ProcessPool, RayCluster
    from bastion.data import load_dataset
    from bastion.models.zoo import train_model

    torch.set_num_threads(2)
    digits = load_dataset("digits")
    model = train_model(digits, epochs=15, seed=0).classifier
    policy = parse_policy(
        {
            "samples": 360,
            "batch_size": 60,
            "seed": 0,
            "attacks": [
                {"id": "pgd-linf", "attack": "pgd", "eps": [0.05, 0.1, 0.2], "params": {"steps": 50}},
                {"id": "apgd-linf", "attack": "apgd", "eps": [0.1], "params": {"steps": 100}},
                {"id": "square-linf", "attack": "square", "eps": [0.1, 0.2], "params": {"max_queries": 3000}},
                {
                    "id": "hopskipjump-l2",
                    "attack": "hopskipjump",
                    "norm": "l2",
                    "eps": [1.0],
                    "params": {"max_queries": 3000},
                },
            ],
        }
    )

    def rows(a) -> str:
        return json.dumps(
            {f"{r.entry} {r.at}": {k: v.value for k, v in r.metrics.items()} for r in a.rows}, sort_keys=True
        )

    print(
        f"\n## distributed assessment | {_threads_report()} | digits CNN, all 360 test inputs in batches of 60, 7 budgets over 4 attacks"
    )
    print(f"{'executor':36s} {'seconds':>8s} {'speed-up':>8s} {'jobs':>5s} {'identical':>9s}")
    t0 = time.perf_counter()
    one = run_assessment(model, digits.x_test, digits.y_test, policy)
    base = time.perf_counter() - t0
    print(f"{'one process, 2 torch threads':36s} {base:8.1f} {1.0:8.2f} {'-':>5s} {'-':>9s}", flush=True)
    for label, ex in (
        ("process pool, 2 x 1 thread", ProcessPool(2)),
        ("Ray (local, 2 CPUs), 1 thread each", RayCluster("local", workers=2)),
    ):
        t0 = time.perf_counter()
        a = run_assessment(model, digits.x_test, digits.y_test, policy, executor=ex)
        dt = time.perf_counter() - t0
        same = rows(a) == rows(one)
        print(f"{label:36s} {dt:8.1f} {base / dt:8.2f} {a.extra['distributed']['jobs']:5d} {same!s:>9s}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", default="throughput,mix,faults,assess")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--benign-rate", type=float, default=1.0, help="requests a second per benign client (mix)")
    ap.add_argument("--share-monitors", choices=("on", "off"), default="on", help="mix: sync.share_monitors")
    ap.add_argument(
        "--client-processes",
        choices=("on", "off"),
        default="on",
        help="mix: each client group (idle, benign, attackers) in a process of its own (off: threads of this one)",
    )
    ap.add_argument("--monitors-off", default="", help="mix: monitors to disable, comma-separated (attribution runs)")
    ap.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = ap.parse_args()
    parts = set(args.part.split(","))

    import sqlalchemy as sa

    from bastion.data import load_dataset
    from bastion.models.zoo import save_model, train_model

    if "assess" in parts:
        part_assess(args)
    if not parts & {"throughput", "mix", "faults"}:
        return
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    digits = load_dataset("digits")
    trained = train_model(digits, epochs=5, seed=0)
    model = work / "digits.safetensors"
    save_model(trained.module, trained.card, model)
    body = {"inputs": digits.x_test[:1].tolist()}
    images = [x.tolist() for x in digits.x_test]
    admin_engine = sa.create_engine(args.pg, isolation_level="AUTOCOMMIT")
    made: list[str] = []

    def shared_db() -> dict:
        dbname = f"bench_scale_{uuid.uuid4().hex[:8]}"
        with admin_engine.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{dbname}"'))
        made.append(dbname)
        return {
            "database": args.pg.rsplit("/", 1)[0] + f"/{dbname}",
            "secret_file": str(work / "shared.secret"),
            "sync": {"url": args.redis},
        }

    try:
        if "throughput" in parts:
            part_throughput(work, model, body, shared_db(), args)
        if "mix" in parts:
            part_mix(work, model, shared_db(), images, args)
        if "faults" in parts:
            part_faults(work, model, shared_db(), images, args)
    finally:
        with admin_engine.connect() as c:
            for dbname in made:
                c.execute(sa.text(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
        admin_engine.dispose()


if __name__ == "__main__":
    main()
