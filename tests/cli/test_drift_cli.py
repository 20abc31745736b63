"""`bastion drift REFERENCE CURRENT`: the verdict, the report, the CI gate and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tests.cli._run import run_cli

from bastion.data import Dataset


def test_same_data_is_not_drift_and_faded_data_is_with_a_report(digits: Dataset, tmp_path: Path) -> None:
    same = run_cli("drift", "digits", "digits")
    assert same.returncode == 0 and "no drift detected" in same.stdout
    faded = tmp_path / "faded.npz"
    np.savez(faded, x=(digits.x_test.numpy() * 0.7 + 0.15), y=digits.y_test.numpy())
    out = tmp_path / "report"
    ran = run_cli("drift", "digits", str(faded), "--out", str(out), "--fail-on-drift")
    assert ran.returncode == 1 and "drift:" in ran.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["verdict"] == "drift" and results["ks"]["drifted"] > 0 and results["current"]["inputs"] == 360
    html = (out / "index.html").read_text()
    assert "Per-feature KS tests" in html and "data:image/png;base64," in html  # the per-pixel map of what moved


def test_bad_arguments_get_one_line_and_exit_2(tmp_path: Path) -> None:
    for args in (
        ("drift", "digits", "digits", "--alpha", "3"),
        ("drift", "digits", "digits", "--current-split", "validation"),
        ("drift", "digits", "breast-cancer"),
        ("drift", "digits", str(tmp_path / "missing.npz")),
    ):
        ran = run_cli(*args)
        assert ran.returncode == 2, (args, ran.stdout, ran.stderr)
        assert ran.stderr.startswith("error:") and len(ran.stderr.strip().splitlines()) == 1, ran.stderr
