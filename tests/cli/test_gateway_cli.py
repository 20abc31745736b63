"""`bastion keys`, `bastion incidents` and `bastion audit` (in-process) on a real gateway database."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from tests.cli._run import Ran, run_cli

from bastion.gateway import Gateway, load_config
from bastion.monitors import Alert, Severity


def _bastion(*args: str, cwd: Path) -> Ran:
    return run_cli(*args, cwd=cwd)


def test_keys_incidents_and_audit_from_the_command_line(digits_model_file: Path, tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(yaml.safe_dump({"models": {"digits": {"paths": [str(digits_model_file)]}}, "database": "gw.db"}))
    made = _bastion("keys", "create", "ci-bot", "--scope", "predict:labels", "-c", str(config), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("bk_") and "cannot be shown again" in made.stderr
    key_id = key.split("_")[1]
    listed = _bastion("keys", "list", "-c", str(config), cwd=tmp_path)
    assert key_id in listed.stdout and "ci-bot" in listed.stdout and key not in listed.stdout
    bad = _bastion("keys", "create", "x", "--scope", "root", "-c", str(config), cwd=tmp_path)
    assert bad.returncode == 2 and "unknown scope" in bad.stderr and "Traceback" not in bad.stderr

    gw = Gateway.from_config(load_config(config), monitors=False)
    try:
        assert gw.keys.authenticate(key).key_id == key_id
        alert = Alert("probing", "probing", key_id, Severity.CRITICAL, "near-duplicates", 1.0, "AML.T0043", 1.0)
        gw.incidents.record_alert(alert)
    finally:
        gw.close()
    inc = _bastion("incidents", "list", "--json", "-c", str(config), cwd=tmp_path)
    records = json.loads(inc.stdout)
    assert [(r["kind"], r["key_id"], r["status"]) for r in records] == [("probing", key_id, "open")]
    iid = str(records[0]["incident_id"])
    assert _bastion("incidents", "ack", iid, "-c", str(config), cwd=tmp_path).returncode == 0
    done = _bastion("incidents", "resolve", iid, "--note", "revoked", "-c", str(config), cwd=tmp_path)
    assert done.returncode == 0 and "resolved" in done.stdout
    again = _bastion("incidents", "resolve", iid, "-c", str(config), cwd=tmp_path)
    assert again.returncode == 2 and "already resolved" in again.stderr

    assert _bastion("keys", "revoke", key_id, "-c", str(config), cwd=tmp_path).returncode == 0
    assert _bastion("keys", "revoke", key_id, "-c", str(config), cwd=tmp_path).returncode == 2
    out = tmp_path / "a.jsonl"
    exported = _bastion("audit", "export", "-c", str(config), "-o", str(out), cwd=tmp_path)
    assert exported.returncode == 0 and out.exists()
    missing = _bastion("serve", "-c", str(tmp_path / "none.yaml"), cwd=tmp_path)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_serve_on_a_busy_port_is_one_line_and_exit_2(digits_model_file: Path, tmp_path: Path) -> None:
    import socket

    config = tmp_path / "gw.yaml"
    config.write_text(yaml.safe_dump({"models": {"digits": {"paths": [str(digits_model_file)]}}, "database": "gw.db"}))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        p = _bastion("serve", "-c", str(config), "--port", str(port), cwd=tmp_path)
    assert p.returncode == 2 and "cannot listen on 127.0.0.1" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "gw.db").exists()  # refused before anything was opened
