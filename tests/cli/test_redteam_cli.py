"""`bastion redteam run` against a real gateway over HTTP with a red-team key: the first run is kept, a second run
after the served model got weaker is a regression, opened as an incident in the gateway's store; runs are audited."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import yaml
from tests.cli._run import run_cli

from bastion.data import Dataset
from bastion.gateway import Gateway
from bastion.gateway.config import load_config
from bastion.gateway.server import serve_in_background
from bastion.models.zoo import save_model, train_model

POLICY = """\
version: 1
samples: 60
seed: 0
attacks:
  - {id: square, attack: square, eps: [0.05, 0.1], params: {max_queries: 40}}
"""


def test_a_weaker_model_between_runs_opens_an_incident(
    digits_model_file: Path, tmp_path: Path, digits: Dataset
) -> None:
    model = tmp_path / "digits.safetensors"
    shutil.copy(digits_model_file, model)
    shutil.copy(digits_model_file.with_suffix(".json"), model.with_suffix(".json"))
    (tmp_path / "policy.yaml").write_text(POLICY)
    cfg_path = tmp_path / "gateway.yaml"
    cfg_path.write_text(
        yaml.safe_dump(
            {
                "models": {"digits": {"paths": [str(model)]}},
                "database": "gateway.db",
                "runtime": "torch",
                "rate": {
                    "assessment": {"requests_per_second": 1000, "inputs_per_minute": 10**6, "inputs_per_day": 10**7}
                },
            }
        )
    )
    gw = Gateway.from_config(load_config(cfg_path), monitors=False)
    _, admin = gw.keys.create("ops", ["admin"])
    _, red = gw.keys.create("red-team", ["predict:scores", "assessment"])
    try:
        with serve_in_background(gw) as url:
            args = ["redteam", "run", "--url", url, "--model", "digits", "--data", "digits", "-c", str(cfg_path)]
            args += ["--runs", str(tmp_path / "runs"), "--policy", str(tmp_path / "policy.yaml")]
            first = run_cli(*args, env={"BASTION_API_KEY": red})
            assert first.returncode == 0 and "first run" in first.stdout, first.stdout + first.stderr
            weak = train_model(digits, epochs=1, seed=3)  # the model is replaced by a much weaker one
            save_model(weak.module, weak.card, model)
            r = httpx.post(f"{url}/v1/admin/models/digits/reload", headers={"Authorization": f"Bearer {admin}"})
            assert r.status_code == 200, r.text
            second = run_cli(*args, env={"BASTION_API_KEY": red})
            assert second.returncode == 1 and "regression" in second.stdout, second.stdout + second.stderr
        runs = sorted((tmp_path / "runs").iterdir())
        assert len(runs) == 2 and all((r / "results.json").is_file() and (r / "index.html").is_file() for r in runs)
        record = json.loads((runs[1] / "run.json").read_text())
        assert record["previous"] == str(runs[0]) and record["regressions"] and record["incident_id"]
        (incident,) = [i for i in gw.store.list_incidents() if i.kind == "redteam_regression"]
        assert incident.incident_id == record["incident_id"] and incident.evidence[0]["evidence"]["run"] == str(runs[1])
        audited = [e for e in gw.store.iter_events(0) if e.decision == "admin:redteam_run"]
        assert len(audited) == 2
    finally:
        gw.close()


def test_bad_invocations_exit_2_in_one_line(tmp_path: Path) -> None:
    base = ["redteam", "run", "--model", "m", "--data", "digits", "-c", str(tmp_path / "none.yaml")]
    for extra, env, message in (
        (["--url", "ftp://x"], {"BASTION_API_KEY": "k"}, "--url must be http"),
        (["--url", "http://127.0.0.1:1"], {"BASTION_API_KEY": ""}, "red-team key is needed"),
        (["--url", "http://127.0.0.1:1"], {"BASTION_API_KEY": "k"}, "does not exist"),
    ):
        ran = run_cli(*base, *extra, env=env)
        assert ran.returncode == 2 and message in ran.stderr and len(ran.stderr.strip().splitlines()) == 1, ran.stderr
