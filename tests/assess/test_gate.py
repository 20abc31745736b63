"""The gate never passes falsely: cut-short runs are inconclusive, sanity errors fail, no thresholds is no gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import Quantize
from tests.model_server import serve_model

from bastion.assess import parse_policy, run_assessment
from bastion.assess.metrics import wilson_interval
from bastion.cli.main import main
from bastion.data import Dataset
from bastion.errors import PolicyError
from bastion.models import TorchClassifier
from bastion.models.zoo import TrainedModel


def _policy(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "samples": 60,
        "attacks": [
            {"attack": "fgsm", "eps": [0.05, 0.1]},
            {"attack": "pgd", "eps": [0.1], "params": {"steps": 5}},
        ],
        "probes": [{"family": "corruption", "params": {"severities": [1, 5]}}],
    }
    return base | kw


def test_wilson_interval_matches_the_formula() -> None:
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and abs(hi - 0.2775) < 1e-3
    lo, hi = wilson_interval(50, 100)
    assert abs(lo - 0.4038) < 1e-3 and abs(hi - 0.5962) < 1e-3


def test_reordered_entries_give_identical_numbers(digits_model: TrainedModel, digits: Dataset) -> None:
    a = parse_policy(_policy())
    data = _policy()
    data["attacks"] = list(reversed(data["attacks"]))  # type: ignore[call-overload]
    b = parse_policy(data)
    ra = run_assessment(digits_model.classifier, digits.x_test, digits.y_test, a)
    rb = run_assessment(digits_model.classifier, digits.x_test, digits.y_test, b)
    rows_a = {(r.entry, json.dumps(r.at, sort_keys=True)): r.metrics for r in ra.rows}
    rows_b = {(r.entry, json.dumps(r.at, sort_keys=True)): r.metrics for r in rb.rows}
    assert rows_a == rows_b and len(rows_a) == 3 + 6


def test_no_thresholds_is_no_gate_not_a_pass(digits_model: TrainedModel, digits: Dataset) -> None:
    a = run_assessment(digits_model.classifier, digits.x_test, digits.y_test, parse_policy(_policy(samples=20)))
    assert a.gate == "no gate" and not a.passed


def test_thresholds_on_any_family_metric_and_interval_bound(digits_model: TrainedModel, digits: Dataset) -> None:
    policy = parse_policy(
        _policy(
            thresholds=[
                {
                    "probe": "corruption",
                    "at": {"corruption": "contrast", "severity": 1},
                    "metric": "accuracy",
                    "min": 0.5,
                },
                {"probe": "pgd-linf", "eps": 0.1, "metric": "robust_accuracy", "min": 0.0, "bound": "lower"},
                {"attack": "fgsm-linf", "eps": 0.05, "metric": "success_rate", "max": 0.0},
            ]
        )
    )
    a = run_assessment(digits_model.classifier, digits.x_test, digits.y_test, policy)
    assert [c.status for c in a.checks] == ["pass", "pass", "fail"] and a.gate == "fail"
    lower = a.checks[1]
    assert lower.estimate is not None and lower.value == lower.estimate.low <= lower.estimate.value


@pytest.mark.parametrize(
    ("threshold", "message"),
    [
        ({"probe": "pgd-linf", "eps": 0.1, "min": 50}, "did you mean 0.5"),
        ({"probe": "pgd-linf", "eps": 0.1, "metric": "tpr", "min": 0.5}, "evasion does not produce"),
        ({"probe": "corruption", "metric": "accuracy", "min": 0.5}, "matches 6 rows"),
        ({"probe": "corruption", "at": {"corruption": "fog"}, "metric": "accuracy", "min": 0.5}, "selects"),
        ({"probe": "nothing", "min": 0.5}, "does not run"),
    ],
)
def test_bad_thresholds_are_policy_errors(threshold: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy(_policy(thresholds=[threshold]))
    with pytest.raises(PolicyError, match="unknown assessment family"):
        parse_policy(_policy(probes=[{"family": "astrology"}]))


def test_gradient_masking_fails_the_gate_unless_accepted(digits_model: TrainedModel, digits: Dataset) -> None:
    masked = TorchClassifier(Quantize(digits_model.module), digits.spec)
    data = {
        "samples": 60,
        "attacks": [
            {"attack": "pgd", "eps": [0.2], "params": {"steps": 10}},
            {"attack": "square", "eps": [0.2], "params": {"max_queries": 200}},
        ],
        "thresholds": [{"probe": "pgd-linf", "eps": 0.2, "min": 0.0}],  # trivially met: only masking can fail it
    }
    a = run_assessment(masked, digits.x_test, digits.y_test, parse_policy(data))
    assert a.checks[0].status == "pass" and a.gate == "fail"
    assert any("sanity check" in r for r in a.gate_reasons)
    accepted = parse_policy(data | {"accept_sanity": ["gradients", "black-beats-white"]})
    assert run_assessment(masked, digits.x_test, digits.y_test, accepted).gate == "pass"


@pytest.mark.parametrize("mode", ["degrade_after", "throttle_after"])
def test_cut_short_endpoint_runs_exit_3(mode: str, digits_model: TrainedModel, tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "samples: 10\nattacks:\n  - {id: square-linf, attack: square, eps: [0.1], params: {max_queries: 100}}\n"
        "  - {id: hsj, attack: hopskipjump, norm: l2, eps: [1.0], params: {max_queries: 100}}\n"
        "probes:\n  - {family: corruption, params: {severities: [1]}}\n"
        "thresholds:\n  - {probe: square-linf, eps: 0.1, metric: robust_accuracy, min: 0.0}\n"
    )
    with serve_model(digits_model.classifier, output="scores", **{mode: 5}) as url:
        code = main(["assess", "--url", url, "--data", "digits", "--policy", str(policy), "--out", str(tmp_path / "r")])
    assert code == 3
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["gate"]["status"] == "inconclusive" and results["thresholds"][0]["status"] == "inconclusive"
    assert not results["passed"]
    if mode == "throttle_after":  # once the endpoint stops serving, the rest of the policy is not run at all
        later = [r for r in results["rows"] if r["entry"] != "square-linf"]
        assert later and all(not r["complete"] and "not run" in r["note"] for r in later)
    with serve_model(digits_model.classifier, output="scores") as url:  # the same run, not cut short, passes
        code = main(["assess", "--url", url, "--data", "digits", "--policy", str(policy), "--out", str(tmp_path / "r")])
    assert code == 0


def test_junit_and_baseline(digits_model_file: Path, tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "samples: 40\nattacks:\n  - {attack: fgsm, eps: [0.05, 0.1]}\n"
        "thresholds:\n  - {probe: fgsm-linf, eps: 0.05, min: 0.0}\n  - {probe: fgsm-linf, eps: 0.1, max: 0.01}\n"
    )
    args = ["assess", str(digits_model_file), "--policy", str(policy)]
    assert main([*args, "--out", str(tmp_path / "a"), "--junit", str(tmp_path / "junit.xml")]) == 1
    xml = (tmp_path / "junit.xml").read_text()
    assert xml.count("<testcase") == 2 and xml.count("<failure") == 1 and 'failures="1"' in xml
    base = json.loads((tmp_path / "a" / "results.json").read_text())
    for row in base["rows"]:
        row["metrics"]["robust_accuracy"]["value"] += 0.2  # pretend the earlier model was more robust
    (tmp_path / "base.json").write_text(json.dumps(base))
    ok = tmp_path / "ok.yaml"
    ok.write_text(
        "samples: 40\nattacks:\n  - {attack: fgsm, eps: [0.05, 0.1]}\nthresholds:\n  - {probe: fgsm-linf, eps: 0.05, min: 0.0}\n"
    )
    same = ["assess", str(digits_model_file), "--policy", str(ok), "--out", str(tmp_path / "b")]
    assert main([*same, "--baseline", str(tmp_path / "a" / "results.json")]) == 0
    assert main([*same, "--baseline", str(tmp_path / "base.json")]) == 1
    assert main([*same, "--baseline", str(tmp_path / "nothing.json")]) == 2
