"""Sanity checks catch what makes an evaluation unreliable: masked gradients, randomness, non-monotonic curves."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tests.conftest import Quantize

from bastion import TorchClassifier, build_report, parse_policy, run_assessment, write_report
from bastion.attacks.sanity import (
    BudgetFigure,
    check_black_box_beats_white_box,
    check_gradients,
    check_monotonic,
    check_randomness,
)
from bastion.data import Dataset
from bastion.models.zoo import TrainedModel


class Noisy:
    """Scores with fresh noise on every query, as a randomised defence would give."""

    def __init__(self, inner: TorchClassifier) -> None:
        self.inner, self.spec, self.queries = inner, inner.spec, 0

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        self.queries += x.shape[0]
        return self.inner.predict_logits(x) + torch.randn(x.shape[0], self.spec.num_classes) * 2


def test_gradients_and_randomness_checks(digits_model: TrainedModel, digits: Dataset) -> None:
    x, y = digits.x_test[:64], digits.y_test[:64]
    assert check_gradients(digits_model.classifier, x, y) == []
    masked = TorchClassifier(Quantize(digits_model.module), digits.spec)
    flags = check_gradients(masked, x, y)
    assert [f.check for f in flags] == ["gradients"] and flags[0].evidence["vanishing_fraction"] > 0.9
    assert check_randomness(digits_model.classifier, x) == []
    noisy = check_randomness(Noisy(digits_model.classifier), x)
    assert noisy and noisy[0].check == "randomness" and noisy[0].evidence["label_changes"] > 0


def test_curve_checks_on_figures() -> None:
    figs = [
        BudgetFigure("pgd", "linf", 0.1, 0.50, True),
        BudgetFigure("pgd", "linf", 0.2, 0.60, True),
        BudgetFigure("square", "linf", 0.1, 0.30, False),
        BudgetFigure("square", "linf", 0.2, 0.20, False),
    ]
    mono = check_monotonic(figs)
    assert [f.evidence["attack"] for f in mono] == ["pgd"]
    bb = check_black_box_beats_white_box(figs)
    assert [f.evidence["eps"] for f in bb] == [0.1, 0.2] and all(f.severity == "error" for f in bb)
    assert check_black_box_beats_white_box(figs[:2]) == [] and check_monotonic(figs[2:]) == []


def test_assessment_of_a_gradient_masking_model_is_flagged(
    digits_model: TrainedModel, digits: Dataset, tmp_path: Path
) -> None:
    masked = TorchClassifier(Quantize(digits_model.module), digits.spec)
    policy = parse_policy(
        {
            "samples": 60,
            "attacks": [
                {"attack": "pgd", "norm": "linf", "eps": [0.2], "params": {"steps": 10}},
                {"attack": "square", "norm": "linf", "eps": [0.2], "params": {"max_queries": 200}},
            ],
        }
    )
    a = run_assessment(masked, digits.x_test, digits.y_test, policy)
    checks = {f.check for f in a.sanity}
    assert {"gradients", "black-beats-white"} <= checks
    report = build_report(
        a, model={"name": "quantized"}, data=digits.provenance.to_dict(), class_names=digits.spec.class_names
    )
    html_path, json_path = write_report(report, tmp_path)
    results = json.loads(json_path.read_text())
    assert {f["check"] for f in results["sanity"]} == checks
    html = html_path.read_text()
    assert "gradients are probably masked" in html and 'id="fig-queries"' in html
    square = next(x for x in results["attacks"] if x["id"] == "square-linf")
    assert square["white_box"] is False and len(square["showcase_success_queries"]) > 0


def test_a_model_answering_one_class_is_flagged_as_an_error() -> None:
    from bastion.attacks.sanity import check_degenerate

    labels = torch.arange(100) % 2
    flags = check_degenerate(torch.ones(100, dtype=torch.long), labels)
    assert [f.check for f in flags] == ["degenerate"] and flags[0].severity == "error"
    assert "class 1" in flags[0].message and flags[0].evidence["label_share"] == 0.5
    assert check_degenerate(labels.clone(), labels) == []  # a model that separates the classes
    assert check_degenerate(torch.ones(100, dtype=torch.long), torch.ones(100, dtype=torch.long)) == []  # one class
    assert check_degenerate(torch.full((100,), 2), labels) == []  # never right: nothing to attack, said elsewhere
