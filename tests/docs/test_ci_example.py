"""docs/ci/model-release.yml, run step by step with the CLI as a CI runner would: a model is signed and its BOM
published only when the assessment gate passes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from bastion.registry import Registry, generate_keypair, validate_bom

WORKFLOW = Path(__file__).resolve().parents[2] / "docs" / "ci" / "model-release.yml"


def _steps() -> tuple[dict[str, str], list[dict]]:
    doc = yaml.safe_load(WORKFLOW.read_text())
    job = doc["jobs"]["release"]
    return job.get("env", {}), [s for s in job["steps"] if "run" in s and not s.get("name", "").startswith("Install")]


def _run_workflow(work: Path, secrets: dict[str, str], start: int = 0) -> list[tuple[str, int, str]]:
    """Run each `run:` step from ``start`` in order with bash -e, stopping at the first failure (as a runner does)."""
    job_env, steps = _steps()
    env = {**os.environ, **job_env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # a runner caches bytecode; without it each step recompiles torch
    done = []
    for step in steps[start:]:
        step_env = {
            k: re.sub(r"\$\{\{\s*secrets\.(\w+)\s*\}\}", lambda m: secrets[m.group(1)], str(v))
            for k, v in (step.get("env") or {}).items()
        }
        p = subprocess.run(
            ["bash", "-e", "-c", step["run"]],
            cwd=work,
            env={**env, **step_env},
            capture_output=True,
            text=True,
            timeout=300,
        )
        done.append((step["name"], p.returncode, p.stdout + p.stderr))
        if p.returncode != 0:
            break
    return done


def _policy(work: Path, minimum: float) -> None:
    (work / "ci" / "release-policy.yaml").write_text(
        "name: release\nsamples: 100\nattacks:\n  - {attack: fgsm, norm: linf, eps: [0.05]}\n"
        f"thresholds:\n  - {{attack: fgsm-linf, eps: 0.05, min: {minimum}}}\n"
    )


def test_the_release_workflow_signs_and_publishes_only_when_the_gate_passes(tmp_path: Path) -> None:
    """The repository holds the policy and the public key; the private key is the CI secret."""
    (tmp_path / "ci").mkdir()
    keys = tmp_path.parent / f"{tmp_path.name}-keys"
    generate_keypair(keys / "signer.key", tmp_path / "ci" / "signer.pub")
    secrets = {"BASTION_SIGNING_KEY": (keys / "signer.key").read_text()}
    steps = _steps()[1]
    gate = next(i for i, s in enumerate(steps) if s["name"].startswith("Assess"))

    _policy(tmp_path, 1.0)  # a gate no model passes: the job stops at the assessment, nothing is signed
    ran = _run_workflow(tmp_path, secrets)
    assert ran[-1][0] == steps[gate]["name"] and ran[-1][1] == 1, ran[-1]
    with Registry.open(tmp_path / "registry") as reg:
        assert [r.kind for r in reg.rows()] == ["dataset"]
    assert not (tmp_path / "release").exists()

    _policy(tmp_path, 0.0)  # the same run, re-run from the gate with a policy the model passes
    ran = _run_workflow(tmp_path, secrets, start=gate)
    assert all(code == 0 for _, code, _ in ran), ran[-1]
    assert len(ran) == len(steps) - gate
    assert not (tmp_path / "signer.key").exists()  # the secret is removed after use
    bom = json.loads((tmp_path / "release" / "bom.cdx.json").read_text())
    assert validate_bom(bom) == [] and bom["metadata"]["component"]["type"] == "machine-learning-model"
    with Registry.open(tmp_path / "registry") as reg:
        model = reg.resolve("digits-cnn-digits-s0", "model")
        manifest = reg.manifest(model)
        assert manifest.assessment is not None and manifest.assessment["verdict"] == "pass"
        assert model.signer is not None
        assert {r.kind for r in reg.rows()} == {"dataset", "model", "report"}
    assert (tmp_path / "release" / "digits-cnn-digits-s0-v1" / "digits.safetensors").is_file()
