"""Gateway fixtures: a configured gateway over the session's digits model, keys, and a real uvicorn server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from bastion.gateway import Gateway, create_app, parse_config


@dataclass
class Env:
    gateway: Gateway
    client: TestClient
    admin: str
    scores: str
    labels: str
    tmp: Path

    def h(self, key: str | None) -> dict[str, str]:
        return {} if key is None else {"Authorization": f"Bearer {key}"}


def make_config(model_file: Path, tmp: Path, **overrides: Any) -> Any:
    data: dict[str, Any] = {
        "models": {"digits": {"paths": [str(model_file)]}},
        "database": str(tmp / "gateway.db"),
        "rate": {"requests_per_second": 1000, "inputs_per_minute": 1_000_000, "inputs_per_day": 10_000_000},
    }
    data.update(overrides)
    return parse_config(data, base=tmp)


@pytest.fixture()
def make_env(digits_model_file: Path, tmp_path: Path) -> Iterator[Callable[..., Env]]:
    made: list[Gateway] = []

    def make(monitors: bool = False, **overrides: Any) -> Env:
        cfg = make_config(digits_model_file, tmp_path, **overrides)
        gw = Gateway.from_config(cfg, monitors=monitors)
        made.append(gw)
        _, admin = gw.keys.create("ops", ["admin"])
        _, scores = gw.keys.create("app", ["predict:scores"])
        _, labels = gw.keys.create("partner", ["predict:labels"])
        return Env(gw, TestClient(create_app(gw)), admin, scores, labels, tmp_path)

    yield make
    for gw in made:
        gw.close()


@pytest.fixture()
def env(make_env: Callable[..., Env]) -> Env:
    return make_env()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(gateway: Gateway) -> Iterator[str]:
    """Serve ``gateway`` with a real uvicorn server on a loopback port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(gateway), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    else:
        raise RuntimeError("uvicorn did not start")
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
