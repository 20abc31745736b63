"""`bastion assess --ray ADDRESS` on a real local Ray cluster (started with `ray start --head`, token authentication
on, as Ray >= 2.59 does by default) writes the same results.json figures as a one-process run; --workers and --ray
refuse what they cannot do in one line, exit 2."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.cli._run import run_cli

from bastion.gateway.server import free_port

POLICY = """\
version: 1
samples: 60
batch_size: 20
seed: 5
attacks:
  - {id: fgsm, attack: fgsm, eps: [0.05, 0.1]}
  - {id: square, attack: square, eps: [0.1], params: {max_queries: 50}}
"""


def _ray() -> str:
    exe = Path(sys.executable).with_name("ray")
    if not exe.is_file():
        found = shutil.which("ray")
        if found is None:
            pytest.fail("Ray is not installed (it is in the test extra: pip install -e '.[test]')")
        return found
    return str(exe)


def test_assess_on_a_local_ray_cluster_equals_the_local_run(digits_model_file: Path, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    local = run_cli("assess", str(digits_model_file), "--policy", str(policy), "--out", str(tmp_path / "local"))
    assert local.returncode == 0, local.stdout + local.stderr
    port = free_port()
    # Ray's token authentication (on by default) with a token of the test's own: nothing read from ~/.ray, so the
    # test passes on a fresh machine as on one where someone once ran `ray get-auth-token --generate`
    token = secrets.token_hex(32)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_ENABLE_USAGE_STATS": "0"}
    started = subprocess.run(
        [_ray(), "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        # a process of its own, as from a shell: Ray reads RAY_AUTH_MODE when it is first imported
        ran = subprocess.run(
            [
                *(sys.executable, "-m", "bastion", "assess", str(digits_model_file), "--policy", str(policy)),
                *("--out", str(tmp_path / "ray"), "--ray", f"127.0.0.1:{port}"),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert "jobs on Ray" in ran.stdout
    finally:
        subprocess.run([_ray(), "stop", "--force"], env=env, capture_output=True, timeout=120)
    a = json.loads((tmp_path / "local" / "results.json").read_text())
    b = json.loads((tmp_path / "ray" / "results.json").read_text())
    assert a["rows"] == b["rows"] and a["examples"] == b["examples"] and len(a["rows"]) == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "--workers must be >= 1"),
        (["--ray", "nowhere"], "not host:port"),
        (["--ray", "127.0.0.1:1"], "cannot reach the Ray cluster"),
    ],
)
def test_bad_cluster_options_exit_2_with_one_line(
    digits_model_file: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    ran = run_cli("assess", str(digits_model_file), "--out", str(tmp_path / "r"), *args)
    assert ran.returncode == 2 and message in ran.stderr and len(ran.stderr.strip().splitlines()) == 1, ran.stderr


def test_an_endpoint_is_not_split_over_workers(tmp_path: Path) -> None:
    ran = run_cli("assess", "--url", "http://127.0.0.1:1/v1/models/m/predict", "--data", "digits", "--workers", "2")
    assert ran.returncode == 2 and "--url cannot be split" in ran.stderr, ran.stderr
