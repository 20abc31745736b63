"""`bastion intel export | import | list | remove` on real gateway databases; bad bundles get one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from fastapi.testclient import TestClient
from tests.cli._run import run_cli
from tests.gateway.conftest import make_config

from bastion.data import Dataset
from bastion.gateway import Gateway, create_app


def _config(tmp: Path, model: Path, db: str) -> Path:
    path = tmp / f"{db}.yaml"
    path.write_text(yaml.safe_dump({"models": {"digits": {"paths": [str(model)]}}, "database": f"{db}.db"}))
    return path


def test_export_import_list_remove(digits_model_file: Path, digits: Dataset, tmp_path: Path) -> None:
    gw = Gateway.from_config(make_config(digits_model_file, tmp_path, database=str(tmp_path / "a.db")), monitors=True)
    try:
        _, key = gw.keys.create("prober", ["predict:scores"])
        client, g = TestClient(create_app(gw)), torch.Generator().manual_seed(0)
        for _ in range(40):  # near-duplicates of one digit: the probing monitor flags the key
            q = (digits.x_test[7:8] + 0.01 * torch.randn((1, 1, 8, 8), generator=g)).clamp(0, 1)
            client.post(
                "/v1/models/digits/predict", json={"inputs": q.tolist()}, headers={"Authorization": f"Bearer {key}"}
            )
    finally:
        gw.close()
    a, b = _config(tmp_path, digits_model_file, "a"), _config(tmp_path, digits_model_file, "b")
    out = tmp_path / "intel.json"
    ran = run_cli("intel", "export", "-c", str(a), "-o", str(out), "--since", "1h", "--identity", "Team A")
    assert ran.returncode == 0, ran.stderr
    assert "input fingerprint(s)" in ran.stdout and "AML.T0043" in ran.stdout
    assert json.loads(out.read_text())["type"] == "bundle"
    ran = run_cli("intel", "import", str(out), "-c", str(b))
    assert ran.returncode == 0 and "from Team A" in ran.stdout and "0 already imported" in ran.stdout, ran.stdout
    again = run_cli("intel", "import", str(out), "-c", str(b))
    assert "0 new" in again.stdout
    listed = run_cli("intel", "list", "-c", str(b))
    bundle_id = ran.stdout.split("imported bundle ")[1].split()[0]
    assert bundle_id in listed.stdout and "Team A" in listed.stdout
    assert run_cli("intel", "remove", bundle_id, "-c", str(b)).returncode == 0
    gone = run_cli("intel", "remove", bundle_id, "-c", str(b))
    assert gone.returncode == 2 and "no imported bundle" in gone.stderr and len(gone.stderr.strip().splitlines()) == 1


def test_a_bad_bundle_or_option_is_one_line_and_exit_2(digits_model_file: Path, tmp_path: Path) -> None:
    cfg = _config(tmp_path, digits_model_file, "g")
    evil = tmp_path / "evil.json"
    evil.write_text(
        json.dumps({"type": "bundle", "id": "bundle--1", "objects": [{"type": "x-evil", "id": "x-evil--1"}]})
    )
    for args, message in [
        (("intel", "import", str(evil), "-c", str(cfg)), "does not import"),
        (("intel", "import", str(evil), "-c", str(cfg), "--max-bytes", "10"), "over the 10-byte limit"),
        (("intel", "import", str(tmp_path / "missing.json"), "-c", str(cfg)), "does not exist"),
        (("intel", "export", "-c", str(cfg), "--clients", "some"), "--clients must be"),
        (("intel", "export", "-c", str(cfg), "--since", "tomorrow"), "is not a time"),
    ]:
        ran = run_cli(*args)
        assert ran.returncode == 2 and message in ran.stderr and len(ran.stderr.strip().splitlines()) == 1, (args, ran)
    from bastion.gateway.store.sql import SqlStore

    store = SqlStore(tmp_path / "g.db")
    try:  # the refused imports are in the audit log, each with what was refused
        refused = [e for e in store.recent_events(100) if e.decision == "admin:intel_import"]
    finally:
        store.close()
    assert len(refused) == 2 and all(e.status == 400 and e.output["target"] == str(evil) for e in refused)
