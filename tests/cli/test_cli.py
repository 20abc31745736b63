"""The `bastion` command as a user runs it: exit codes, one-line errors, no tracebacks.

Most tests run the command in-process (same parser and error handling, no interpreter start-up); the few where
a separate process is the point (--version's import cost, an endpoint that disappears) use a real subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.cli._run import Ran, run_cli


def bastion(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Ran:
    return run_cli(*args, env=env, cwd=cwd)


def bastion_process(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "BASTION_THREADS": "1", "COLUMNS": "160", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "bastion", *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=300
    )


def _no_traceback(p: Ran | subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout
    lines = p.stderr.strip().splitlines()
    first = next((i for i, line in enumerate(lines) if "error:" in line), len(lines))
    assert first >= len(lines) - 1, p.stderr  # an error is one line, and the last thing printed


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "m.safetensors"
    p = bastion("train", "--data", "digits", "--epochs", "8", "--out", str(out))
    assert p.returncode == 0, p.stderr
    assert "clean test accuracy" in p.stdout and out.is_file() and out.with_suffix(".json").is_file()
    return out


def _policy(tmp_path: Path, minimum: float) -> Path:
    p = tmp_path / "policy.yaml"
    p.write_text(
        "samples: 100\nattacks:\n  - {attack: pgd, norm: linf, eps: [0.05, 0.1], params: {steps: 5}}\n"
        f"thresholds:\n  - {{attack: pgd-linf, eps: 0.05, min: {minimum}}}\n"
    )
    return p


def test_assess_passes_and_fails_as_a_ci_gate(trained: Path, tmp_path: Path) -> None:
    ok = bastion("assess", str(trained), "--policy", str(_policy(tmp_path, 0.0)), "--out", str(tmp_path / "r1"))
    assert ok.returncode == 0, ok.stderr
    assert "pgd-linf" in ok.stdout and "pass" in ok.stdout
    results = json.loads((tmp_path / "r1" / "results.json").read_text())
    assert results["passed"] is True and results["n_samples"] == 100
    bad = bastion("assess", str(trained), "--policy", str(_policy(tmp_path, 1.0)), "--out", str(tmp_path / "r2"))
    assert bad.returncode == 1
    assert "policy gate failed" in bad.stdout and "FAIL" in bad.stdout
    _no_traceback(bad)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--data", "mnist"], "unknown dataset 'mnist'"),
        (["train", "--arch", "resnet", "--epochs", "1"], "unknown architecture 'resnet'"),
        (["train", "--epochs", "0"], "Invalid value for '--epochs'"),
        (["assess", "missing.safetensors"], "does not exist"),
        (["frobnicate"], "No such command"),
    ],
)
def test_user_errors_exit_2_with_one_clear_line(args: list[str], message: str, tmp_path: Path) -> None:
    p = bastion(*args, cwd=tmp_path)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert message in p.stderr
    _no_traceback(p)


def test_missing_fashion_mnist_names_the_install_command(tmp_path: Path) -> None:
    p = bastion("train", "--data", "fashion-mnist", env={"BASTION_FASHION_MNIST": str(tmp_path / "none")})
    assert p.returncode == 2 and "apt-get install dataset-fashion-mnist" in p.stderr
    _no_traceback(p)


def test_tampered_weights_and_malformed_policy_are_refused(trained: Path, tmp_path: Path) -> None:
    copy = tmp_path / "t.safetensors"
    shutil.copy(trained, copy)
    shutil.copy(trained.with_suffix(".json"), tmp_path / "t.json")
    data = bytearray(copy.read_bytes())
    data[-3] ^= 0x01
    copy.write_bytes(bytes(data))
    p = bastion("assess", str(copy), "--out", str(tmp_path / "r"))
    assert p.returncode == 2 and "refusing to load" in p.stderr
    _no_traceback(p)
    pol = tmp_path / "bad.yaml"
    pol.write_text("attacks:\n  - {attack: pgd, eps: [0.1], params: {steps: -3}}\n")
    p = bastion("assess", str(trained), "--policy", str(pol), "--out", str(tmp_path / "r"))
    assert p.returncode == 2 and "steps must be an int >= 1" in p.stderr
    _no_traceback(p)
    p = bastion("assess", str(trained), "--data", "breast-cancer", "--out", str(tmp_path / "r"))
    assert p.returncode == 2 and "takes inputs of shape (1, 8, 8)" in p.stderr


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    p = bastion("demo", "--out", str(tmp_path / "demo"), "--epochs", "10")
    assert p.returncode == 0, p.stderr
    index = tmp_path / "demo" / "report" / "index.html"
    assert index.is_file() and str(index) in p.stdout.replace("\n", "")
    results = json.loads((tmp_path / "demo" / "report" / "results.json").read_text())
    assert {a["id"] for a in results["attacks"]} == {
        "fgsm-linf",
        "pgd-linf",
        "pgd-l2",
        "autoattack-linf",
        "square-linf",
        "hopskipjump-l2",
    }
    assert [f for f in results["sanity"] if f["severity"] == "error"] == []  # a plain CNN: no gradient masking
    assert results["model"]["clean_accuracy"] > 0.9
    # step 4: the attack through the gateway is flagged and the attacker's key degraded, all of it audited
    out = " ".join(p.stdout.split())
    assert "incident 1: probing (AML.T0043)" in out and "under_attack" in out
    assert (tmp_path / "demo" / "gateway" / "gateway.db").is_file()


def test_version() -> None:
    p = bastion_process("--version")
    assert p.returncode == 0 and p.stdout.startswith("bastion ")


def test_assess_a_live_endpoint_with_black_box_attacks(trained: Path, tmp_path: Path) -> None:
    from tests.model_server import serve_model

    from bastion import load_model

    loaded = load_model(trained)
    small = tmp_path / "bb.yaml"
    small.write_text(
        "name: small-blackbox\nsamples: 8\nattacks:\n"
        "  - {id: square-linf, attack: square, eps: [0.1], params: {max_queries: 60}}\n"
        "  - {id: hopskipjump-l2, attack: hopskipjump, norm: l2, eps: [1.5],"
        " params: {max_queries: 120, init_evals: 10, max_evals: 20}}\n"
    )
    with serve_model(loaded.classifier, output="scores") as url:
        p = bastion("assess", "--url", url, "--data", "digits", "--policy", str(small), "--out", str(tmp_path / "r"))
        assert p.returncode == 0, p.stderr
        results = json.loads((tmp_path / "r" / "results.json").read_text())
        assert results["model"]["endpoint"] == url and results["n_samples"] == 8
        assert {a["id"] for a in results["attacks"]} == {"square-linf", "hopskipjump-l2"}
        assert all(b["complete"] for a in results["attacks"] for b in a["budgets"])
        white = tmp_path / "white.yaml"
        white.write_text("attacks:\n  - {attack: pgd, eps: [0.1]}\n")
        p = bastion("assess", "--url", url, "--data", "digits", "--policy", str(white), "--out", str(tmp_path / "r2"))
        assert p.returncode == 2 and "need gradients" in p.stderr
    p = bastion("assess", "--url", url, "--data", "digits", "--policy", str(small), "--out", str(tmp_path / "r3"))
    assert p.returncode == 3 and "cannot reach" in p.stderr  # the server is gone: one clear line, exit 3
    _no_traceback(p)
