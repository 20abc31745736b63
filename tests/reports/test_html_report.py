"""The written report: self-contained HTML with its figures, numbers that match results.json."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from bastion import build_report, load_model, parse_policy, run_assessment, write_report
from bastion.data import Dataset
from bastion.reports.render.html import fmt


def test_report_embeds_figures_and_matches_results_json(
    digits_model_file: Path, digits: Dataset, tmp_path: Path
) -> None:
    loaded = load_model(digits_model_file)
    policy = parse_policy(
        {
            "samples": 80,
            "attacks": [
                {"attack": "fgsm", "norm": "linf", "eps": [0.1, 0.3]},
                {"id": "pgd-strong", "attack": "pgd", "norm": "linf", "eps": [0.1, 0.3], "params": {"steps": 10}},
                {"attack": "pgd", "norm": "l2", "eps": [0.5], "params": {"steps": 10}},
            ],
            "thresholds": [{"attack": "pgd-strong", "eps": 0.1, "min": 0.99}],
        }
    )
    a = run_assessment(loaded.classifier, digits.x_test, digits.y_test, policy)
    report = build_report(
        a, model=loaded.card.to_dict(), data=digits.provenance.to_dict(), class_names=digits.spec.class_names
    )
    html_path, json_path = write_report(report, tmp_path / "report")
    html = html_path.read_text()
    results = json.loads(json_path.read_text())

    assert "<script" not in html and "http://" not in html and "https://" not in html  # self-contained
    images = re.findall(r'<img id="(fig-[a-z]+)" alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert {i for i, _ in images} == {"fig-robustness", "fig-examples", "fig-perturbations"}
    for _, data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"

    assert [x["id"] for x in results["attacks"]] == ["fgsm-linf", "pgd-strong", "pgd-l2"]
    for attack in results["attacks"]:
        for budget in attack["budgets"]:
            for metric in ("robust_accuracy", "success_rate", "median_norm"):
                cell = re.search(
                    rf"data-attack='{attack['id']}' data-eps='{budget['eps']!r}' data-metric='{metric}'>([^<]+)<", html
                )
                assert cell is not None, (attack["id"], budget["eps"], metric)
                assert cell.group(1).strip() == fmt(budget[metric])
    assert results["passed"] is False and results["gate"]["status"] == "fail" and "FAILED" in html
    assert results["thresholds"][0]["value"] == results["attacks"][1]["budgets"][0]["robust_accuracy"]
    assert results["model"]["weights_sha256"] == loaded.card.weights_sha256 != ""
    assert results["data"]["sha256"] == digits.provenance.sha256
    assert results["threats"][0]["atlas"] == ["AML.T0043", "AML.T0015"]
    assert results["versions"]["torch"] and results["timings"]["assessment_seconds"] > 0
    assert len(results["findings"]) == 3 and "AML.T0043" in html and "ML01:2023" in html
    assert results["sanity"] == [] and "No sign of an unreliable evaluation" in html
    assert 'id="fig-queries"' not in html  # no black-box attack in this policy


def test_partial_results_are_marked_in_the_report(digits_model_file: Path, digits: Dataset, tmp_path: Path) -> None:
    from tests.model_server import serve_model

    from bastion import HttpClassifier

    loaded = load_model(digits_model_file)
    policy = parse_policy(
        {"samples": 12, "attacks": [{"attack": "square", "eps": [0.1], "params": {"max_queries": 200}}]}
    )
    with (
        serve_model(loaded.classifier, output="scores", fail_after=20) as url,
        HttpClassifier(url, digits.spec) as remote,
    ):
        a = run_assessment(remote, digits.x_test, digits.y_test, policy)
    budget = a.outcomes[0].budgets[0]
    assert not budget.complete and "HTTP 503" in a.outcomes[0].errors[0]
    report = build_report(a, model={"name": "remote"}, data=digits.provenance.to_dict())
    html_path, json_path = write_report(report, tmp_path)
    html = html_path.read_text()
    assert "(partial)" in html and "stopped early and their figures are partial" in html
    assert json.loads(json_path.read_text())["attacks"][0]["budgets"][0]["complete"] is False
