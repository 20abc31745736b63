"""The contract every registered assessment family must meet (one suite, run over the whole registry)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from bastion._progress import NullProgress
from bastion.assess.families import FAMILIES, AssessData, FamilyResult, ReportSection, TrainingData
from bastion.assess.runner import derived_seed
from bastion.data import Dataset
from bastion.models import predict_labels
from bastion.models.zoo import TrainedModel

SMALL: dict[str, dict[str, Any]] = {  # cheap settings per family; a new family adds one line here
    "evasion": {"attack": "fgsm", "eps": [0.05, 0.1]},
    "corruption": {"severities": [1, 5]},
    "detection": {
        "attacks": [{"attack": "fgsm", "eps": 0.2}],
        "adaptive_eps": 0.2,
        "adaptive_steps": 10,
        "bit_depth": 2,
        "reconstruction_epochs": 5,
    },
    "membership": {"reference_models": 4, "candidates": 60},
    "extraction": {"budget": 200, "epochs": 3},
    "inversion": {"steps": 20, "black_box_steps": 5, "restarts": 1, "judge_epochs": 2},
    "poisoning": {"rates": [0.05], "trigger": {"size": 2}},
    "backdoor": {"steps": 20, "inputs": 100},
}


def _data(model: TrainedModel, digits: Dataset, n: int = 40) -> AssessData:
    x, y = digits.x_test[:n], digits.y_test[:n]
    clean = predict_labels(model.classifier, x)
    # the rest of the test split is the clean reference data, as the runner gives it; the train split is what the
    # model was trained on, as its card says
    training = TrainingData(digits.x_train, digits.y_train, model.card, "the model's card")
    return AssessData(x, y, torch.arange(n), clean, 64, 0.95, digits.x_test[n:], digits.y_test[n:], training)


def _run(name: str, model: TrainedModel, digits: Dataset, seed: int = 0) -> FamilyResult:
    family = FAMILIES.get(name)
    settings = family.settings.model_validate(SMALL[name])
    entry = family.default_id(settings)

    def gen(at: Mapping[str, Any]) -> torch.Generator:
        return torch.Generator().manual_seed(derived_seed(seed, entry, at))

    return family.run(
        model.classifier, _data(model, digits), settings, entry=entry, generator_for=gen, progress=NullProgress()
    )


def test_every_family_has_small_settings_here() -> None:
    assert set(FAMILIES.names()) == set(SMALL)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_settings_are_strict(name: str) -> None:
    with pytest.raises(ValidationError):
        FAMILIES.get(name).settings.model_validate({**SMALL[name], "no_such_setting": 1})


@pytest.mark.parametrize("name", sorted(SMALL))
def test_rows_match_the_plan_and_metrics_are_declared(name: str, digits_model: TrainedModel, digits: Dataset) -> None:
    family = FAMILIES.get(name)
    settings = family.settings.model_validate(SMALL[name])
    result = _run(name, digits_model, digits)
    assert [r.at for r in result.rows] == family.planned_rows(settings)
    for row in result.rows:
        assert row.complete and set(row.metrics) <= set(family.metrics)
        for metric, est in row.metrics.items():
            info = family.metrics[metric]
            assert info.kind in ("fraction", "value") and info.better in ("higher", "lower")
            assert est.low <= est.value <= est.high
            if info.kind == "fraction":
                assert 0.0 <= est.low <= est.high <= 1.0 and est.n is not None


@pytest.mark.parametrize("name", sorted(SMALL))
def test_runs_are_deterministic_given_the_seed(name: str, digits_model: TrainedModel, digits: Dataset) -> None:
    a, b = _run(name, digits_model, digits), _run(name, digits_model, digits)
    assert [r.metrics for r in a.rows] == [r.metrics for r in b.rows]


@pytest.mark.parametrize("name", sorted(SMALL))
def test_section_is_plain_data(name: str, digits_model: TrainedModel, digits: Dataset) -> None:
    section = FAMILIES.get(name).section([_run(name, digits_model, digits)], digits.spec.class_names)
    assert section is None or isinstance(section, ReportSection)
    if section is not None:
        for head, body in section.tables:
            assert all(len(row) == len(head) for row in body)
        assert all(png.startswith(b"\x89PNG") for png, _ in section.figures)
