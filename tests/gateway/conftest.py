"""Gateway fixtures: a configured gateway over the session's digits model, keys, and a real uvicorn server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bastion.gateway import Gateway, create_app, parse_config
from bastion.gateway.server import serve_in_background


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


running = serve_in_background  # the tests serve through the same helper the demo uses
