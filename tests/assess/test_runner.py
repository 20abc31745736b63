from __future__ import annotations

import pytest

from bastion import ConfigError, InputValidationError, parse_policy, run_assessment
from bastion.data import Dataset
from bastion.models.zoo import TrainedModel


def _policy(**over: object):  # type: ignore[no-untyped-def]
    data = {
        "samples": 120,
        "attacks": [
            {"attack": "fgsm", "norm": "linf", "eps": [0.05, 0.2]},
            {"attack": "pgd", "norm": "linf", "eps": [0.05, 0.2], "params": {"steps": 10}},
        ],
        "thresholds": [
            {"attack": "pgd-linf", "eps": 0.05, "min": 0.5},
            {"attack": "pgd-linf", "eps": 0.2, "metric": "robust_accuracy", "min": 0.9},
        ],
    } | over
    return parse_policy(data)


def test_assessment_figures_are_consistent(digits_model: TrainedModel, digits: Dataset) -> None:
    a = run_assessment(digits_model.classifier, digits.x_test, digits.y_test, _policy())
    assert a.n_samples == 120 and 0.85 < a.clean_accuracy <= 1.0
    fgsm, pgd = a.outcomes
    for o in a.outcomes:
        accs = [b.robust_accuracy for b in o.budgets]
        assert accs == sorted(accs, reverse=True)  # larger budgets never help the model here
        assert all(b.robust_accuracy <= a.clean_accuracy for b in o.budgets)
        assert all(abs(b.robust_accuracy - a.clean_accuracy * (1 - b.success_rate)) < 1e-9 for b in o.budgets)
    for bf, bp in zip(fgsm.budgets, pgd.budgets, strict=True):
        assert bp.robust_accuracy <= bf.robust_accuracy + 0.02
    assert a.outcomes[1].atlas == ("AML.T0043", "AML.T0015") and a.outcomes[1].owasp.startswith("ML01")
    passed = {c.at["eps"]: c.passed for c in a.checks}
    assert passed == {0.05: True, 0.2: False} and not a.passed
    assert a.examples and all(e.attack in ("fgsm-linf", "pgd-linf") for e in a.examples)


def test_assessment_is_reproducible(digits_model: TrainedModel, digits: Dataset) -> None:
    p = _policy(samples=60)
    a = run_assessment(digits_model.classifier, digits.x_test, digits.y_test, p)
    b = run_assessment(digits_model.classifier, digits.x_test, digits.y_test, p)
    assert a.sample_indices == b.sample_indices
    assert [x.robust_accuracy for o in a.outcomes for x in o.budgets] == [
        x.robust_accuracy for o in b.outcomes for x in o.budgets
    ]


def test_too_many_samples_and_bad_data(digits_model: TrainedModel, digits: Dataset) -> None:
    with pytest.raises(ConfigError, match="has only 360"):
        run_assessment(digits_model.classifier, digits.x_test, digits.y_test, _policy(samples=1000))
    with pytest.raises(InputValidationError, match="x_test"):
        run_assessment(digits_model.classifier, digits.x_test * 16, digits.y_test, _policy())
    with pytest.raises(InputValidationError, match="y_test"):
        run_assessment(digits_model.classifier, digits.x_test, digits.y_test[:10], _policy())


def test_suite_contributions_reach_the_assessment(digits_model: TrainedModel, digits: Dataset) -> None:
    policy = parse_policy(
        {
            "samples": 60,
            "attacks": [
                {
                    "attack": "autoattack",
                    "eps": [0.1],
                    "params": {"steps": 10, "n_target_classes": 2, "square_queries": 50},
                }
            ],
        }
    )
    a = run_assessment(digits_model.classifier, digits.x_test, digits.y_test, policy)
    b = a.outcomes[0].budgets[0]
    assert list(b.contributions) == ["apgd-ce", "apgd-t", "square"]
    assert sum(b.contributions.values()) == round(b.success_rate * b.n_attacked)
