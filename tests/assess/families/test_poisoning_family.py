"""Poisoning and backdoor scanning in `assess`: the run from the CLI, the report sections, the gate, and bad
settings refused before any work with one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli._run import run_cli

POISON = {"family": "poisoning", "id": "badnets", "params": {"rates": [0.05], "target": 3, "trigger": {"size": 3}}}
SCAN = {"family": "backdoor", "params": {"steps": 100, "inputs": 300}}


def test_poisoning_and_backdoor_scan_run_from_the_cli(digits_model_file: Path, tmp_path: Path) -> None:
    policy = {
        "samples": 100,
        "probes": [POISON, SCAN],
        "thresholds": [{"probe": "badnets", "at": {"rate": 0.05}, "metric": "attack_success_rate", "max": 0.5}],
    }
    (tmp_path / "p.yaml").write_text(json.dumps(policy))
    ran = run_cli(
        "assess",
        str(digits_model_file),
        "--data",
        "digits",
        "--members",
        "train",
        "--policy",
        str(tmp_path / "p.yaml"),
        "--out",
        str(tmp_path / "r"),
    )
    # the backdoor planted at 5% works on the retrained copy, so the gate on its success rate fails
    assert ran.returncode == 1, ran.stdout + ran.stderr
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    rows = {r["entry"]: r for r in results["rows"]}
    asr = rows["badnets"]["metrics"]["attack_success_rate"]["value"]
    assert asr > 0.5 and rows["badnets"]["complete"]
    scan = rows["backdoor-scan"]["metrics"]
    assert scan["flagged_classes"]["value"] == 0  # the assessed model itself is clean
    html = (tmp_path / "r" / "index.html").read_text()
    assert "Data poisoning" in html and "Backdoor scan" in html and "AML.T0020" in html


def test_bad_poisoning_settings_get_one_line_and_exit_2(digits_model_file: Path, tmp_path: Path) -> None:
    for params in (
        {"rates": [1.5]},
        {"rates": [0.05], "trigger": {"size": 12}},
        {"rates": [0.05], "attack": "label-flip", "source": 2, "target": 2},
    ):
        (tmp_path / "p.yaml").write_text(
            json.dumps({"samples": 50, "probes": [{"family": "poisoning", "params": params}]})
        )
        ran = run_cli(
            "assess",
            str(digits_model_file),
            "--data",
            "digits",
            "--members",
            "train",
            "--policy",
            str(tmp_path / "p.yaml"),
            "--out",
            str(tmp_path / "r"),
        )
        assert ran.returncode == 2, (params, ran.stdout, ran.stderr)
        assert ran.stderr.startswith("error:") and len(ran.stderr.strip().splitlines()) == 1, ran.stderr
    # a test-only file says nothing about what the model trained on: the family cannot run, and says how to fix it
    import numpy as np

    from bastion.data import load_dataset

    digits = load_dataset("digits")
    np.savez(tmp_path / "test-only.npz", x=digits.x_test.numpy(), y=digits.y_test.numpy())
    (tmp_path / "p.yaml").write_text(json.dumps({"samples": 50, "probes": [POISON]}))
    ran = run_cli(
        "assess",
        str(digits_model_file),
        "--data",
        str(tmp_path / "test-only.npz"),
        "--policy",
        str(tmp_path / "p.yaml"),
    )
    assert ran.returncode == 2 and "--members train" in ran.stderr, ran.stderr


def test_a_scan_that_found_too_few_triggers_is_incomplete(digits_model_file: Path) -> None:
    import torch

    from bastion._progress import NullProgress
    from bastion.assess.families import FAMILIES, AssessData
    from bastion.data import load_dataset
    from bastion.models.zoo import load_model

    digits = load_dataset("digits")
    model = load_model(digits_model_file).classifier
    family = FAMILIES.get("backdoor")
    settings = family.settings.model_validate({"steps": 1, "inputs": 50})  # one step: no trigger can work yet
    x, y = digits.x_test[:50], digits.y_test[:50]
    data = AssessData(x, y, torch.arange(50), y, 64, 0.95)
    res = family.run(
        model,
        data,
        settings,
        entry="scan",
        generator_for=lambda at: torch.Generator().manual_seed(0),
        progress=NullProgress(),
    )
    assert not res.rows[0].complete and "no working trigger" in res.rows[0].note
