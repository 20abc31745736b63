"""The inversion family in `assess`: judged reconstructions per method, and a white-box inversion refused up front
for a model without gradients."""

from __future__ import annotations

from pathlib import Path

from bastion.assess import run_assessment
from bastion.assess.policy import Policy
from bastion.cli.main import main
from bastion.data import Dataset
from bastion.models.zoo import TrainedModel

PROBE = {"family": "inversion", "params": {"steps": 150, "black_box_steps": 60, "restarts": 2}}


def test_both_methods_are_judged(digits_model: TrainedModel, digits: Dataset) -> None:
    policy = Policy.model_validate({"samples": 60, "probes": [PROBE]})
    res = run_assessment(digits_model.classifier, digits.x_test, digits.y_test, policy)
    rows = {r.at["method"]: r.metrics for r in res.rows}
    assert set(rows) == {"white-box", "black-box"}
    assert rows["white-box"]["judge_agreement"].value >= 0.8  # measured 1.0
    assert rows["black-box"]["queries_per_class"].value > rows["white-box"]["queries_per_class"].value
    section = res.results[0]
    assert len(section.payload["results"]) == 2


def test_white_box_inversion_of_a_black_box_model_is_refused(user_models: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text('probes: [{family: inversion, params: {methods: ["white-box"]}}]\n')
    code = main(["assess", str(user_models["skops"]), "--data", "digits", "--policy", str(tmp_path / "p.yaml")])
    assert code == 2
