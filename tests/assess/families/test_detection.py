"""The detection family end to end through the runner: naive beside adaptive, and never a naive figure alone."""

from __future__ import annotations

import torch

from bastion.assess.families import FAMILIES
from bastion.assess.policy import parse_policy
from bastion.assess.runner import run_assessment
from bastion.data import Dataset
from bastion.models.zoo import TrainedModel

POLICY = {
    "samples": 120,
    "seed": 0,
    "probes": [
        {
            "family": "detection",
            "params": {
                "detectors": ["feature-squeezing", "reconstruction"],
                "attacks": [{"attack": "pgd", "eps": 0.2, "params": {"steps": 10}}],
                "adaptive_eps": 0.2,
                "adaptive_steps": 20,
                "bit_depth": 2,
                "reconstruction_epochs": 10,
            },
        }
    ],
}


def test_detection_rows_and_report_section(digits_model: TrainedModel, digits: Dataset) -> None:
    policy = parse_policy(POLICY)
    result = run_assessment(digits_model.classifier, digits.x_test, digits.y_test, policy)
    rows = {(r.at["detector"], r.at["mode"]): r for r in result.rows}
    assert set(rows) == {
        (d, m) for d in ("feature-squeezing", "reconstruction") for m in ("clean", "naive", "adaptive")
    }
    for d in ("feature-squeezing", "reconstruction"):
        naive, adaptive = rows[(d, "naive")].metrics, rows[(d, "adaptive")].metrics
        assert rows[(d, "clean")].metrics["false_positive_rate"].value <= 0.15
        # the attacker who knows the detector gets at least as much past it as one who does not
        assert adaptive["evasion_rate"].value >= naive["evasion_rate"].value
    # squeezing catches naive PGD on digits, and the adaptive attack takes most of that away
    sq_naive, sq_adapt = rows[("feature-squeezing", "naive")].metrics, rows[("feature-squeezing", "adaptive")].metrics
    assert sq_naive["detection_rate"].value >= 0.3
    assert sq_adapt["detection_rate"].value < sq_naive["detection_rate"].value
    section = FAMILIES.get("detection").section(list(result.results), ())
    assert section is not None and section.figures
    ((head, body),) = section.tables
    assert head[-1].startswith("adaptive")
    assert all(row[-1] and not row[-1].startswith("NOT MEASURED") for row in body)
    # the HTML report of a policy with no evasion entry renders, with the detectors' section
    from bastion.reports import build_report, render_html

    html = render_html(build_report(result, model={"name": "digits-cnn"}, data={"name": "digits"}))
    assert "Input detectors: naive and adaptive attacks" in html and "adaptive: detected" in html


def test_a_model_without_gradients_gets_no_naive_figure_without_saying_adaptive_is_missing(
    digits_model: TrainedModel, digits: Dataset
) -> None:
    class ScoresOnly:  # a black-box endpoint: scores, no gradients
        spec = digits_model.classifier.spec

        def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
            return digits_model.classifier.predict_logits(x)

    policy = parse_policy(
        {
            "samples": 60,
            "probes": [
                {
                    "family": "detection",
                    "params": {
                        "detectors": ["feature-squeezing"],
                        "attacks": [{"attack": "square", "eps": 0.2, "params": {"max_queries": 100}}],
                        "bit_depth": 2,
                    },
                }
            ],
            # a gate on the naive figure alone: it must not pass while the adaptive one is missing
            "thresholds": [{"probe": "detection", "at": {"mode": "naive"}, "metric": "detection_rate", "min": 0.0}],
        }
    )
    result = run_assessment(ScoresOnly(), digits.x_test, digits.y_test, policy)  # type: ignore[arg-type]
    adaptive = next(r for r in result.rows if r.at["mode"] == "adaptive")
    assert not adaptive.complete and "gradients" in adaptive.note
    naive = next(r for r in result.rows if r.at["mode"] == "naive")
    assert naive.metrics and not naive.complete
    assert result.gate == "inconclusive", result.gate_reasons
    section = FAMILIES.get("detection").section(list(result.results), ())
    assert section is not None
    assert section.tables[0][1][0][-1].startswith("NOT MEASURED")


def test_nothing_to_attack_is_not_a_verdict(digits_model: TrainedModel, digits: Dataset) -> None:
    class AlwaysZero:  # classifies no input of classes 1-9 correctly
        spec = digits_model.classifier.spec

        def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(x.shape[0], 10)
            out[:, 0] = 5.0
            return out

    keep = digits.y_test != 0
    policy = parse_policy(
        {
            "samples": 60,
            "probes": [
                {"family": "detection", "params": {"detectors": ["reconstruction"], "reconstruction_epochs": 1}}
            ],
            "thresholds": [{"probe": "detection", "at": {"mode": "adaptive"}, "metric": "evasion_rate", "max": 0.5}],
        }
    )
    result = run_assessment(AlwaysZero(), digits.x_test[keep], digits.y_test[keep], policy)  # type: ignore[arg-type]
    assert all(not r.complete and "nothing to attack" in r.note for r in result.rows)
    assert result.gate == "inconclusive"
