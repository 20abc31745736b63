"""Gateway benchmark (issue 4): pipeline overhead against the bare model, and detection of attacks through HTTP.

    python bench/gateway.py --part overhead|detection|blinded|randomization|all

Overhead: the Fashion-MNIST reference CNN served by the same uvicorn, once bare (a minimal FastAPI endpoint: parse
JSON, run the model, return scores) and once through `bastion serve` with every stage on (keys, rate limits,
validation, the three monitors, threat levels, postprocessing, the SQLite audit log). The same concurrent load from
this process on loopback, servers run one at a time, alternating. Target: p50 added latency <= 2 ms, throughput >=
70% of bare. The added latency is measured with one client, where it is the time the gateway adds to a request;
with several clients on two cores the p50 is mostly queueing behind the lower throughput (printed too). Each
server's CPU time per request under load is printed beside, as it moves less with the machine than throughput.

Detection: a fresh `bastion serve` per scenario; attacks run with Bastion's own HttpClassifier and attacks: Square
and HopSkipJump probing (target: flagged within 200 queries), a Jacobian-augmentation extraction (Papernot et al.
2017; target: flagged within 2,000 queries) and 20 benign keys replaying the test set, 10,000 queries together
(target: no alert).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bastion import HttpClassifier, Norm, ThreatModel, load_dataset
from bastion.attacks import HopSkipJump, Square
from bastion.models.zoo import load_model
from evasion import reference_model

CACHE = Path(__file__).resolve().parent / ".cache"


def bare_server(model_path: str, port: int, runtime: str) -> None:
    """The model alone behind FastAPI + uvicorn, on the same runtime as the gateway: the floor the gateway's
    overhead is measured from."""
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    from bastion.models.zoo import load_model

    torch.set_num_threads(1)
    model = load_model(model_path).classifier
    if runtime == "onnxruntime" and not model.compile_inference(threads=1):
        raise SystemExit("the bare model did not compile for onnxruntime")
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/models/fmnist/predict")
    def predict(body: dict[str, Any]) -> JSONResponse:
        x = torch.tensor(body["inputs"], dtype=torch.float32)
        probs = torch.softmax(model.predict_logits(x), 1)
        return JSONResponse({"labels": probs.argmax(1).tolist(), "scores": probs.tolist()})

    _ = Request
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _wait(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("server did not start")


class Served:
    """A `bastion serve` process on a fresh database, with its admin key and a way to make more keys."""

    def __init__(self, workdir: Path, model_path: Path, port: int, **overrides: Any) -> None:
        self.model_path = model_path
        workdir.mkdir(parents=True, exist_ok=True)
        for f in workdir.glob("gw.db*"):
            f.unlink()
        cfg: dict[str, Any] = {
            "models": {"fmnist": {"paths": [str(model_path)]}},
            "database": "gw.db",
            "rate": {"requests_per_second": 100_000, "inputs_per_minute": 10_000_000, "inputs_per_day": 100_000_000},
        }
        cfg.update(overrides)
        self.config = workdir / "gateway.yaml"
        self.config.write_text(yaml.safe_dump(cfg))
        self.admin = self.key("bench-admin", "admin")
        self.url = f"http://127.0.0.1:{port}"
        try:  # a stale server on this port would answer for a database that no longer exists
            httpx.get(f"{self.url}/healthz", timeout=0.5)
            raise RuntimeError(f"port {port} is already serving; stop the old process first")
        except httpx.HTTPError:
            pass
        env = {**os.environ, "BASTION_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bastion", "serve", "-c", str(self.config), "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        _wait(self.url, self.proc)

    def key(self, name: str, scope: str = "predict:scores", *more: str) -> str:
        scopes = [a for s in (scope, *more) for a in ("--scope", s)]
        out = subprocess.run(
            [sys.executable, "-m", "bastion", "keys", "create", name, *scopes, "-c", str(self.config)],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip().splitlines()[-1]

    def keys(self, n: int, prefix: str) -> list[str]:
        from bastion.gateway.admin import admin_session

        with admin_session(self.config) as h:
            return [h.keys.create(f"{prefix}-{i}", ["predict:scores"])[1] for i in range(n)]

    def incidents(self) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.url}/v1/admin/incidents", headers={"Authorization": f"Bearer {self.admin}"}, timeout=30)
        return list(r.json()["incidents"])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _load(url: str, keys: list[str | None], inputs: list[list[Any]], seconds: float) -> tuple[list[float], int]:
    """Each key drives one client thread sending one input per request for ``seconds``; latencies in ms."""
    lat: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds
    errors = [0]

    def worker(i: int, key: str | None) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        mine: list[float] = []
        with httpx.Client(base_url=url, timeout=30) as c:
            j = i * 997
            while time.perf_counter() < stop:
                body = {"inputs": [inputs[j % len(inputs)]]}
                t0 = time.perf_counter()
                r = c.post("/v1/models/fmnist/predict", json=body, headers=headers)
                mine.append((time.perf_counter() - t0) * 1000)
                if r.status_code != 200:
                    errors[0] += 1
                j += 1
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=worker, args=(i, k)) for i, k in enumerate(keys)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, errors[0]


def overhead(args: argparse.Namespace, model_path: Path) -> None:
    data = load_dataset("fashion-mnist")
    inputs = data.x_test[:2000].tolist()
    print(f"\n## Gateway overhead — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    if args.no_detectors:
        print("gateway: every monitor on, the input detectors off (--no-detectors)")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, python "
        f"{sys.version.split()[0]}, server torch threads 1, load average {os.getloadavg()[0]:.2f}"
    )
    print(f"runtime of the model (bare and gateway), the detectors and the encoder: {args.runtime}")
    print(
        f"load: {args.clients} concurrent client threads in this process, one 28x28 input per request, "
        f"{args.seconds:g} s per round, {args.rounds} alternating rounds per server\n",
        flush=True,
    )
    results: dict[str, list[tuple[list[float], int, float]]] = {"bare": [], "gateway": []}
    single: dict[str, list[float]] = {"bare": [], "gateway": []}  # latencies with one client: nothing queues
    cpu: dict[str, list[float]] = {"bare": [], "gateway": []}  # server CPU seconds per request under load
    port = 18800
    for rnd in range(args.rounds):
        for mode in ("bare", "gateway"):
            port += 1
            if mode == "bare":
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--bare-server",
                        str(model_path),
                        "--port",
                        str(port),
                        "--runtime",
                        args.runtime,
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                url = f"http://127.0.0.1:{port}"
                _wait(url, proc)
                keys: list[str | None] = [None] * args.clients
                stopper = proc
            else:
                extra: dict[str, Any] = {"runtime": args.runtime}
                if args.no_detectors:
                    extra["detectors"] = {"enabled": False}
                served = Served(CACHE / "gw-overhead", model_path, port, **extra)
                keys = list(served.keys(args.clients, "load"))
                url, stopper = served.url, served.proc
            _load(url, keys, inputs, 2.0)  # warm-up
            c0 = _cpu_seconds(stopper.pid)
            t0 = time.perf_counter()
            lat, errors = _load(url, keys, inputs, args.seconds)
            wall = time.perf_counter() - t0
            cpu[mode].append((_cpu_seconds(stopper.pid) - c0) / max(len(lat), 1))
            one, one_errors = _load(url, keys[:1], inputs, args.seconds / 2)
            single[mode].extend(one)
            results[mode].append((lat, errors + one_errors, len(lat) / wall))
            print(
                f"round {rnd + 1} {mode}: {len(lat)} requests, {len(lat) / wall:.1f} req/s, "
                f"p50 {statistics.median(lat):.2f} ms, server CPU {cpu[mode][-1] * 1000:.2f} ms a request; "
                f"one client: p50 {statistics.median(one):.2f} ms; errors {errors + one_errors}",
                flush=True,
            )
            stopper.terminate()
            stopper.wait(timeout=20)
    rows = {}
    for mode, runs in results.items():
        lat = [v for r in runs for v in r[0]]
        q = statistics.quantiles(lat, n=100)
        rows[mode] = (
            statistics.median(single[mode]),
            statistics.median(lat),
            q[94],
            q[98],
            statistics.mean(r[2] for r in runs),
            statistics.mean(cpu[mode]) * 1000,
            sum(r[1] for r in runs),
        )
    print(
        f"\n| server | p50 ms, 1 client | p50 ms, {args.clients} clients | p95 ms | p99 ms | throughput req/s | "
        "server CPU ms/request | non-200 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for mode, (p1, p50, p95, p99, tput, cpu_ms, errs) in rows.items():
        print(f"| {mode} | {p1:.2f} | {p50:.2f} | {p95:.2f} | {p99:.2f} | {tput:.1f} | {cpu_ms:.2f} | {errs} |")
    added = rows["gateway"][0] - rows["bare"][0]
    loaded = rows["gateway"][1] - rows["bare"][1]
    ratio = rows["gateway"][4] / rows["bare"][4]
    errors = sum(r[6] for r in rows.values())  # a server that answered with errors measured something else
    ok = added <= 2.0 and ratio >= 0.7 and errors == 0
    print(
        f"\np50 added latency {added:.2f} ms with one client ({loaded:.2f} ms with {args.clients}, where it is mostly "
        f"queueing behind the lower throughput); throughput {ratio:.1%} of bare; server CPU "
        f"{rows['gateway'][5] - rows['bare'][5]:.2f} ms more a request; non-200 answers {errors} -> "
        f"{'MET' if ok else 'NOT MET'}"
    )
    print(f"load average after: {os.getloadavg()[0]:.2f}", flush=True)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), all its threads together."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _first_flag(served: Served, kind: str | None = None) -> dict[str, Any] | None:
    incs = [i for i in served.incidents() if kind is None or i["kind"] == kind]
    if not incs:
        return None
    return min(incs, key=lambda i: i["opened_at"])


def jacobian_extraction(remote: HttpClassifier, seeds: torch.Tensor, budget: int, lam: float = 0.1) -> int:
    """Papernot et al. 2017 Jacobian-based augmentation: label a few seeds, train a substitute, step each point along
    the sign of the substitute's gradient for its label, label the new points, repeat. Returns queries spent."""
    torch.manual_seed(0)
    sub = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(16 * 14 * 14, 10),
    )
    x = seeds.clone()
    with torch.no_grad():
        y = remote.predict_logits(x).argmax(1)
    spent = len(x)
    while spent < budget:
        opt = torch.optim.Adam(sub.parameters(), lr=1e-3)
        for _ in range(10):
            for i in range(0, len(x), 64):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(sub(x[i : i + 64]), y[i : i + 64]).backward()
                opt.step()
        xg = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(sub(xg).gather(1, y[:, None]).sum(), xg)
        new = (x + lam * g.sign()).clamp(0, 1)[: budget - spent]
        with torch.no_grad():
            y_new = remote.predict_logits(new).argmax(1)
        spent += len(new)
        x, y = torch.cat([x, new]), torch.cat([y, y_new])
    return spent


def detection(args: argparse.Namespace, model_path: Path) -> None:
    data = load_dataset("fashion-mnist")
    spec = load_dataset("fashion-mnist").spec
    print(f"\n## Gateway detection — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, python "
        f"{sys.version.split()[0]}, load average {os.getloadavg()[0]:.2f}; fmnist-cnn behind `bastion serve` "
        "with the default monitors (calibrated on 2,000 training images)\n",
        flush=True,
    )
    rows: list[tuple[Any, ...]] = []
    port = 18900
    scenarios = [
        ("Square Linf 0.1, 10 images, 1,000-query budget", "probing", 200),
        ("HopSkipJump L2 2.0, 10 images, 1,000-query budget", "probing", 200),
        ("Jacobian-augmentation extraction, 100 seeds, lambda 0.1", "extraction", 2000),
        ("adaptive: Square Linf 0.1, 10 images, split round-robin over 10 keys (Sybil)", "probing", 200),
    ]
    for title, kind, target in scenarios:
        port += 1
        served = Served(CACHE / "gw-detect", model_path, port)
        try:
            rows.append(_attack(served, title, kind, target, data, spec))
        finally:
            served.stop()
    port += 1
    served = Served(CACHE / "gw-detect", model_path, port)
    try:
        rows.append(_benign(served, data, spec))
    finally:
        served.stop()
    _table(rows)


def _attack(served: Served, title: str, kind: str, target: int, data: Any, spec: Any) -> tuple[Any, ...]:
    n_keys = 10 if "Sybil" in title else 1
    remote: Any = RoundRobin(
        [
            HttpClassifier(f"{served.url}/v1/models/fmnist/predict", spec, api_key=k, max_batch=50)
            for k in served.keys(n_keys, "attacker")
        ],
        flagged=(lambda: bool(served.incidents())) if n_keys > 1 else None,
    )
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(0)
    x, y = data.x_test[:10], data.y_test[:10]
    attack: Any = None
    if "Square" in title:
        attack = Square(ThreatModel(Norm.LINF, 0.1), max_queries=1000)
    elif "HopSkipJump" in title:
        attack = HopSkipJump(ThreatModel(Norm.L2, 2.0), max_queries=1000)
    if attack is not None:
        result = attack.run(remote, x, y, generator=g)
    else:
        jacobian_extraction(remote, data.x_test[:100], budget=3200)
    seconds = time.perf_counter() - t0
    if attack is not None:  # did degradation hurt the attacker? check its output on the model itself
        local = load_model(served.model_path).classifier
        with torch.no_grad():
            through = int((local.predict_logits(result.x_adv).argmax(1) != y).sum())
            bare = attack.run(local, x, y, generator=torch.Generator().manual_seed(0))
            unprotected = int((local.predict_logits(bare.x_adv).argmax(1) != y).sum())
        print(
            f"{title}: adversarial examples that fool the model: {through}/10 through the gateway, "
            f"{unprotected}/10 with the same attack and seed against the unprotected model",
            flush=True,
        )
    if n_keys > 1:
        flagged = {i["key_id"] for i in served.incidents() if i["key_id"] is not None}
        print(
            f"Sybil run: {len(flagged)} of {n_keys} keys flagged; the first flag came after {remote.first_flag_total} "
            "queries of the whole attack",
            flush=True,
        )
    flag = _first_flag(served, kind)
    anyflag = _first_flag(served)
    at = flag["evidence"][0]["evidence"]["queries"] if flag else None
    first_any = anyflag["evidence"][0]["evidence"].get("queries") if anyflag else None
    return (title, remote.queries, kind, at, anyflag["kind"] if anyflag else "-", first_any, target, seconds)


class RoundRobin:
    """Several keys used in turn, one request each: an attacker who knows the monitors are per key."""

    def __init__(self, remotes: list[HttpClassifier], flagged: Any = None) -> None:
        self.remotes, self.spec, self.i = remotes, remotes[0].spec, 0
        self.flagged = flagged  # callable: has any incident been opened yet?
        self.first_flag_total: int | None = None

    @property
    def queries(self) -> int:
        return sum(r.queries for r in self.remotes)

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        r = self.remotes[self.i % len(self.remotes)]
        self.i += 1
        out = r.predict_logits(x)
        if self.first_flag_total is None and self.flagged is not None and self.flagged():
            self.first_flag_total = self.queries
        return out


def _benign(served: Served, data: Any, spec: Any) -> tuple[Any, ...]:
    keys = served.keys(20, "benign")
    t0 = time.perf_counter()
    perm = torch.randperm(10_000, generator=torch.Generator().manual_seed(1))

    def replay(i: int, key: str) -> None:
        remote = HttpClassifier(f"{served.url}/v1/models/fmnist/predict", spec, api_key=key)
        mine = perm[i * 500 : (i + 1) * 500]
        for j in range(0, 500, 10):
            remote.predict_logits(data.x_test[mine[j : j + 10]])

    threads = [threading.Thread(target=replay, args=(i, k)) for i, k in enumerate(keys)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    incidents = served.incidents()
    kinds = ",".join(sorted({i["kind"] for i in incidents})) or "-"
    title = "20 benign keys replaying the test set (500 images each, batches of 10)"
    return (title, 10_000, "any", None, kinds, len(incidents), 0, time.perf_counter() - t0)


def _table(rows: list[tuple[Any, ...]]) -> None:
    print(
        "| traffic | queries sent | first flag: monitor, after queries | monitor meant for it: after queries | target |"
        " seconds |"
    )
    print("|---|---|---|---|---|---|")
    for title, sent, kind, at, first_kind, first_q, target, secs in rows[:-1]:
        verdict = "MET" if first_q is not None and first_q <= target else "NOT MET"
        if title.startswith("adaptive"):
            verdict = "beyond the issue's targets, reported as measured"
        print(
            f"| {title} | {sent} | {first_kind}, {first_q} | {kind}: {at} | first flag <= {target}: {verdict} | "
            f"{secs:.1f} |"
        )
    title, sent, _, _, kinds, count, _, secs = rows[-1]
    verdict = "MET" if count == 0 else "NOT MET"
    print(f"| {title} | {sent} | incidents: {count} ({kinds}) | - | no incident: {verdict} | {secs:.1f} |")
    print(f"load average after: {os.getloadavg()[0]:.2f}", flush=True)


class Released:
    """The model as a client sees it through an output chain (the gateway's postprocessing, in-process)."""

    def __init__(self, model: Any, chain: Any, repeats: int = 1) -> None:
        self.model, self.chain, self.repeats = model, chain, repeats
        self.spec, self.queries = model.spec, 0

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            probs = torch.softmax(self.model.predict_logits(x), 1)
        # an adaptive attacker who knows the noise is fresh per answer asks `repeats` times and averages
        seen = torch.stack([self.chain(probs) for _ in range(self.repeats)]).mean(0)
        self.queries += len(x) * self.repeats
        return seen.clamp_min(1e-12).log()


def randomization(args: argparse.Namespace, model_path: Path) -> None:
    """Output randomization against Square, including an attacker who averages repeated queries."""
    from bastion.defenses.postprocessing import create_chain

    data = load_dataset("fashion-mnist")
    model = load_model(model_path).classifier
    x, y = data.x_test[:200], data.y_test[:200]
    print(f"\n## Output randomization vs Square Linf 0.1 — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, threads 1, load average "
        f"{os.getloadavg()[0]:.2f}; fmnist-cnn, 200 test images, the gateway's postprocessors applied in-process, "
        "monitors left out to isolate the output defence; success = the returned input fools the model itself\n",
        flush=True,
    )
    print("| output | attacker | query budget per image | success rate |")
    print("|---|---|---|---|")
    cases = [
        ("full scores", [], 1),
        ("round 2 decimals", [{"name": "round", "decimals": 2}], 1),
        ("noise sigma 0.05", [{"name": "noise", "sigma": 0.05, "seed": 0}], 1),
        ("noise sigma 0.05", [{"name": "noise", "sigma": 0.05, "seed": 0}], 10),
        ("reverse sigmoid beta 0.7 gamma 0.4", [{"name": "reverse_sigmoid"}], 1),
        ("labels only", ["label_only"], 1),
    ]
    for label, spec, repeats in cases:
        seen = Released(model, create_chain(spec), repeats)
        budget = 1000 * repeats
        r = Square(ThreatModel(Norm.LINF, 0.1), max_queries=1000).run(
            seen, x, y, generator=torch.Generator().manual_seed(0)
        )
        with torch.no_grad():
            fooled = float((model.predict_logits(r.x_adv).argmax(1) != y).float().mean())
        who = "plain Square" if repeats == 1 else f"averages {repeats} answers per query (adaptive)"
        print(f"| {label} | {who} | {budget} | {fooled:.3f} |", flush=True)


class Blinded:
    """An attacker who knows the probing monitor is there: every query gets fresh Gaussian noise, a random shift and
    brightness/contrast jitter before it is sent (query blinding, Chen et al. 2019), optionally interleaved with
    benign queries on the same key; it stops once the gateway has opened an incident (polled every 5 queries)."""

    def __init__(
        self, remote: Any, served: Served, sigma: float, shift: int, jitter: bool, benign: torch.Tensor | None = None
    ) -> None:
        self.remote, self.served, self.spec = remote, served, remote.spec
        self.sigma, self.shift, self.jitter, self.benign = sigma, shift, jitter, benign
        self.g = torch.Generator().manual_seed(11)
        self.attack_queries, self.sent, self.flag_at = 0, 0, None
        self.flag_kinds = "-"

    def _blind(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if self.jitter:
            x = x * (0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=self.g))
            x = x + torch.rand(n, 1, 1, 1, generator=self.g) * 0.2 - 0.1
        if self.shift:
            dy, dx = (int(v) for v in torch.randint(-self.shift, self.shift + 1, (2,), generator=self.g))
            x = torch.roll(x, (dy, dx), (2, 3))
        return (x + self.sigma * torch.randn(x.shape, generator=self.g)).clamp(0, 1)

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        from bastion.errors import RemoteModelError

        if self.flag_at is not None or self.attack_queries >= 1500:
            raise RemoteModelError("stopped: flagged or out of budget")
        out = self.remote.predict_logits(self._blind(x))
        self.attack_queries += len(x)
        self.sent += len(x)
        if self.benign is not None:  # one natural query between attack queries
            self.remote.predict_logits(self.benign[self.sent % len(self.benign)][None])
            self.sent += 1
        if self.attack_queries % 5 < len(x):
            incidents = self.served.incidents()
            if incidents:
                self.flag_at = self.attack_queries
                self.flag_kinds = ",".join(sorted({i["kind"] for i in incidents}))
        return out


def blinded(args: argparse.Namespace, model_path: Path) -> None:
    """Blinded attacks through the running gateway, against the probing monitor with its similarity encoder and,
    side by side, with distances in input space (encoder off): issue 9's adaptive attacker."""
    from bastion import SimBA

    data = load_dataset("fashion-mnist")
    spec = data.spec
    print(f"\n## Blinded attacks through the gateway — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, python "
        f"{sys.version.split()[0]}, load average {os.getloadavg()[0]:.2f}; fmnist-cnn behind `bastion serve`, "
        "default monitors; one input per query, images attacked one after another until the first incident or "
        "1,500 attack queries\n",
        flush=True,
    )
    all_blind = dict(sigma=0.1, shift=2, jitter=True)
    scenarios: list[tuple[str, Any, dict[str, Any], int, bool]] = [
        (
            "SimBA-pixel Linf 0.1, noise 0.1",
            SimBA(ThreatModel(Norm.LINF, 0.1), max_queries=500, basis="pixel"),
            dict(sigma=0.1, shift=0, jitter=False),
            1,
            False,
        ),
        (
            "SimBA-DCT L2 2.0, noise 0.1 + 2 px shifts + brightness/contrast",
            SimBA(ThreatModel(Norm.L2, 2.0), max_queries=500),
            all_blind,
            1,
            False,
        ),
        (
            "Square Linf 0.1, noise 0.1 + 2 px shifts + brightness/contrast",
            Square(ThreatModel(Norm.LINF, 0.1), max_queries=500),
            all_blind,
            1,
            False,
        ),
        (
            "HopSkipJump L2 2.0, noise 0.1 + 2 px shifts + brightness/contrast",
            HopSkipJump(ThreatModel(Norm.L2, 2.0), max_queries=500),
            all_blind,
            1,
            False,
        ),
        (
            "SimBA-DCT L2 2.0, all blinding, interleaved 1:1 with benign queries",
            SimBA(ThreatModel(Norm.L2, 2.0), max_queries=500),
            all_blind,
            1,
            True,
        ),
        (
            "SimBA-DCT L2 2.0, all blinding, round-robin over 10 keys",
            SimBA(ThreatModel(Norm.L2, 2.0), max_queries=500),
            all_blind,
            10,
            False,
        ),
    ]
    print(
        "| blinded attack | probing monitor | attack queries at first incident | incident kinds | all queries sent "
        "| target |"
    )
    print("|---|---|---|---|---|---|")
    port = 19100
    for title, attack, blinding, n_keys, interleave in scenarios:
        for encoder in (True, False):
            port += 1
            served = Served(CACHE / "gw-blind", model_path, port, monitors={"probing": {"encoder": encoder}})
            try:
                remotes = [
                    HttpClassifier(f"{served.url}/v1/models/fmnist/predict", spec, api_key=k)
                    for k in served.keys(n_keys, "attacker")
                ]
                remote: Any = RoundRobin(remotes) if n_keys > 1 else remotes[0]
                w = Blinded(remote, served, benign=data.x_test[5000:6000] if interleave else None, **blinding)
                for j in range(20):
                    if w.flag_at is not None or w.attack_queries >= 1500:
                        break
                    attack.run(
                        w, data.x_test[j : j + 1], data.y_test[j : j + 1], generator=torch.Generator().manual_seed(j)
                    )
            finally:
                served.stop()
            mode = "similarity encoder" if encoder else "input space (encoder off)"
            verdict = "MET" if w.flag_at is not None and w.flag_at <= 500 else "NOT MET"
            print(
                f"| {title} | {mode} | {w.flag_at if w.flag_at is not None else 'not flagged'} of "
                f"{w.attack_queries} | {w.flag_kinds} | {w.sent} | flagged <= 500: {verdict if encoder else 'naive baseline'} |",
                flush=True,
            )


def warm_encoder() -> None:
    """Train (or load) the probing monitor's similarity encoder as `bastion serve` will, before any server starts:
    the first training takes minutes and would outlast a server's start-up wait."""
    from bastion.gateway.monitoring import CALIBRATION_INPUTS
    from bastion.monitors import MONITORS
    from bastion.monitors.query_patterns import ProbingSettings

    t0 = time.perf_counter()
    clean = load_dataset("fashion-mnist").x_train[:CALIBRATION_INPUTS]
    MONITORS.get("probing").build(ProbingSettings(), clean, torch.empty(0))
    print(f"similarity encoder ready in {time.perf_counter() - t0:.1f} s (trained once, then cached)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["overhead", "detection", "blinded", "randomization", "all"], default="all")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--no-detectors", action="store_true", help="overhead: the gateway with its input detectors off")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--runtime", choices=["onnxruntime", "torch"], default="onnxruntime")
    ap.add_argument("--bare-server", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=18800, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare_server:
        bare_server(args.bare_server, args.port, args.runtime)
        return
    torch.set_num_threads(1)
    reference_model(3)
    model_path = CACHE / "fmnist-cnn-e3.safetensors"
    warm_encoder()
    if args.part in ("overhead", "all"):
        overhead(args, model_path)
    if args.part in ("detection", "all"):
        detection(args, model_path)
    if args.part in ("blinded", "all"):
        blinded(args, model_path)
    if args.part in ("randomization", "all"):
        randomization(args, model_path)


if __name__ == "__main__":
    main()
