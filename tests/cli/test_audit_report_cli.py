"""`bastion audit report`: an auditor's HTML + JSON for a period of a real gateway's records; exit 1 on a broken
chain; bad times are refused in one line."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from tests.cli._run import run_cli
from tests.gateway.conftest import Env, make_config
from tests.gateway.test_audit_period import _session

from bastion.data import Dataset


@pytest.fixture()
def make_env(digits_model_file: Path, tmp_path: Path) -> Iterator[Callable[..., Env]]:
    """The gateway tests' environment: a gateway over the digits model with an admin, a scores and a labels key."""
    from fastapi.testclient import TestClient

    from bastion.gateway import Gateway, create_app

    made: list[Gateway] = []

    def make(monitors: bool = False) -> Env:
        gw = Gateway.from_config(make_config(digits_model_file, tmp_path), monitors=monitors)
        made.append(gw)
        keys = [
            gw.keys.create(n, [s])[1]
            for n, s in (("ops", "admin"), ("app", "predict:scores"), ("partner", "predict:labels"))
        ]
        return Env(gw, TestClient(create_app(gw)), *keys, tmp_path)

    yield make
    for gw in made:
        gw.close()


def _config(env: Env, model: Path) -> Path:
    path = env.tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump({"models": {"digits": {"paths": [str(model)]}}, "database": "gateway.db"}))
    return path


def test_the_report_of_a_session_and_of_a_tampered_log(
    make_env: Callable[..., Env], digits: Dataset, digits_model_file: Path
) -> None:
    env = make_env(monitors=True)
    since, until, attacker = _session(env, digits)
    cfg = _config(env, digits_model_file)
    out = env.tmp / "audit"
    ran = run_cli("audit", "report", "-c", str(cfg), "--since", str(since), "--until", str(until), "--out", str(out))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "audit chain intact" in ran.stdout and "1 incidents" in ran.stdout
    html = (out / "index.html").read_text()
    summary = json.loads((out / "results.json").read_text())
    assert "audit chain intact" in html and "Incident" in html and attacker in html and "data:image/png" in html
    assert summary["incidents"][0]["key_id"] == attacker and summary["chain"]["intact"]
    ids = [e.event_id for e in env.gateway.store.iter_events(0)]
    with sqlite3.connect(env.tmp / "gateway.db") as db:
        db.execute("DELETE FROM audit_events WHERE event_id = ?", (ids[4],))
    ran = run_cli("audit", "report", "-c", str(cfg), "--since", "1h", "--out", str(out))
    assert ran.returncode == 1 and f"broken at event {ids[5]}" in ran.stdout, ran.stdout
    assert "audit chain broken" in (out / "index.html").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "last tuesday"], "is not a time"),
        (["--since", "1h", "--until", "2h"], "must be before"),
        (["--since", "2026-12-01T10:00", "--until", "2026-12-01T09:00"], "must be before"),
        (["--registry", "/nonexistent/registry"], "does not exist"),
    ],
)
def test_bad_periods_exit_2_in_one_line(
    make_env: Callable[..., Env], digits_model_file: Path, args: list[str], message: str
) -> None:
    env = make_env()
    ran = run_cli("audit", "report", "-c", str(_config(env, digits_model_file)), "--out", str(env.tmp / "r"), *args)
    assert ran.returncode == 2 and message in ran.stderr and len(ran.stderr.strip().splitlines()) == 1, ran.stderr
