"""An audit trail you can defend: hash-chained rows, admin actions with their target, private files, no silent
new secret."""

from __future__ import annotations

import logging
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from tests.cli._run import run_cli
from tests.gateway.conftest import Env

from bastion.data import Dataset
from bastion.errors import ConfigError
from bastion.gateway import Gateway, load_config
from bastion.gateway.store.base import AuditEvent


def _config(tmp: Path, model: Path) -> Path:
    cfg = tmp / "gw.yaml"
    cfg.write_text(yaml.safe_dump({"models": {"digits": {"paths": [str(model)]}}, "database": "gw.db"}))
    return cfg


def _traffic(env: Env, digits: Dataset, n: int = 5) -> None:
    for i in range(n):
        env.client.post(
            "/v1/models/digits/predict", json={"inputs": digits.x_test[i : i + 1].tolist()}, headers=env.h(env.scores)
        )


def test_the_chain_finds_an_edited_and_a_deleted_row(digits_model_file: Path, digits: Dataset, tmp_path: Path) -> None:
    cfg = _config(tmp_path, digits_model_file)
    gw = Gateway.from_config(load_config(cfg), monitors=False)
    try:
        from fastapi.testclient import TestClient

        from bastion.gateway import create_app

        _, key = gw.keys.create("app", ["predict:scores"])
        env = Env(gw, TestClient(create_app(gw)), "", key, "", tmp_path)
        _traffic(env, digits)
        assert gw.audit.verify() == (5, 0, None)
    finally:
        gw.close()
    ok = run_cli("audit", "verify", "-c", str(cfg))
    assert ok.returncode == 0 and "5 events verified" in ok.stdout
    db = sqlite3.connect(tmp_path / "gw.db")
    db.execute("UPDATE audit_events SET n_inputs = 7 WHERE event_id = 2")
    db.commit()
    edited = run_cli("audit", "verify", "-c", str(cfg))
    assert edited.returncode == 1 and "broken at event 2" in edited.stdout
    db.execute("UPDATE audit_events SET n_inputs = 1 WHERE event_id = 2")
    db.execute("DELETE FROM audit_events WHERE event_id = 3")
    db.commit()
    deleted = run_cli("audit", "verify", "-c", str(cfg))
    assert deleted.returncode == 1 and "broken at event 4" in deleted.stdout
    db.close()


def test_admin_actions_name_their_target(make_env: Callable[..., Env], digits_model_file: Path, tmp_path: Path) -> None:
    env = make_env()
    victim, _ = env.gateway.keys.create("victim", ["predict:labels"])
    assert env.client.delete(f"/v1/admin/keys/{victim.key_id}", headers=env.h(env.admin)).status_code == 200
    events = list(env.gateway.store.iter_events())
    revoke = [e for e in events if e.decision == "admin:revoke_key"]
    assert revoke and revoke[-1].output == {"target": victim.key_id}
    (tmp_path / "cli").mkdir()
    cfg = _config(tmp_path / "cli", digits_model_file)
    made = run_cli("keys", "create", "ci-bot", "--scope", "predict:labels", "-c", str(cfg))
    key_id = made.stdout.strip().split("_")[1]
    assert run_cli("keys", "revoke", key_id, "-c", str(cfg)).returncode == 0
    gw = Gateway.from_config(load_config(cfg), monitors=False)
    try:
        cli_events = [e for e in gw.store.iter_events() if e.decision.startswith("admin:")]
        assert [(e.decision, e.output["target"]) for e in cli_events] == [
            ("admin:create_key", key_id),
            ("admin:revoke_key", key_id),
        ]
        assert all(str(e.client).startswith("cli:") for e in cli_events)
        assert gw.audit.verify()[2] is None
    finally:
        gw.close()


def test_database_files_are_private_and_a_lost_secret_is_not_replaced(
    digits_model_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _config(tmp_path, digits_model_file)
    gw = Gateway.from_config(load_config(cfg), monitors=False)
    gw.keys.create("app", ["predict:scores"])
    gw.audit.record(AuditEvent(0.0, "r", None, None, None, 0, "test", 200, 0.0))
    gw.close()
    for suffix in ("", "-wal", "-shm"):
        f = tmp_path / f"gw.db{suffix}"
        if f.exists():
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    secret = tmp_path / "gw.db.secret"
    secret.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        Gateway.from_config(load_config(cfg), monitors=False).close()
    assert "readable by other users" in caplog.text
    secret.unlink()
    with pytest.raises(ConfigError, match=r"secret file .* is missing"):
        Gateway.from_config(load_config(cfg), monitors=False)
    assert not secret.exists()  # nothing silently made up
    assert run_cli("keys", "list", "-c", str(cfg)).returncode == 2


def test_passwords_in_database_urls_never_reach_a_message() -> None:
    from bastion.gateway.store.sql import SqlStore, masked_url

    assert masked_url("postgresql://user:s3cr3t@db:5432/x") == "postgresql://user:***@db:5432/x"
    with pytest.raises(ConfigError) as info:
        SqlStore("postgresql://user:s3cr3t@127.0.0.1:1/db")
    assert "s3cr3t" not in str(info.value) and "***" in str(info.value)


def test_key_names_are_shown_literally(digits_model_file: Path, tmp_path: Path) -> None:
    cfg = _config(tmp_path, digits_model_file)
    made = run_cli("keys", "create", "[bold]evil[/] [/oops", "--scope", "predict:labels", "-c", str(cfg))
    assert made.returncode == 0 and "[bold]evil[/] [/oops" in made.stderr
    listed = run_cli("keys", "list", "-c", str(cfg))
    assert listed.returncode == 0 and "[bold]evil[/]" in listed.stdout
