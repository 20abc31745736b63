"""The membership family in `assess`: its data needs are checked before any work, it reads the recipe from the
card or the policy, and a gate on it passes or fails on what the attacks measured."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from bastion.assess import run_assessment
from bastion.assess.families import TrainingData
from bastion.assess.policy import Policy
from bastion.cli.main import main
from bastion.data import Dataset
from bastion.errors import ConfigError
from bastion.models.zoo import TrainedModel, save_model, train_model

PROBE = {"family": "membership", "params": {"reference_models": 8, "candidates": 150}}


def _policy(**extra: object) -> Policy:
    return Policy.model_validate({"samples": 50, "probes": [PROBE], **extra})


@pytest.fixture(scope="module")
def overfit(digits: Dataset) -> tuple[TrainedModel, Dataset]:
    small = dataclasses.replace(digits, x_train=digits.x_train[:150], y_train=digits.y_train[:150])
    return train_model(
        small, architecture="tabular-mlp", arch_params={"hidden": [128]}, epochs=80, batch_size=32
    ), small


def test_no_training_data_is_an_error_before_any_work(digits_model: TrainedModel, digits: Dataset) -> None:
    with pytest.raises(ConfigError) as e:
        run_assessment(digits_model.classifier, digits.x_test, digits.y_test, _policy())
    assert "--members train" in str(e.value.problems)  # type: ignore[attr-defined]


def test_gate_on_an_overfit_model(overfit: tuple[TrainedModel, Dataset], digits: Dataset) -> None:
    model, small = overfit
    training = TrainingData(small.x_train, small.y_train, model.card, "test")
    gate = [{"probe": "membership", "at": {"attack": "rmia-online"}, "metric": "auc", "max": 0.6}]
    res = run_assessment(model.classifier, digits.x_test, digits.y_test, _policy(thresholds=gate), training=training)
    rows = {r.at["attack"]: r for r in res.rows}
    assert set(rows) == {"loss", "lira-offline", "lira-online", "rmia-offline", "rmia-online"}
    assert rows["rmia-online"].metrics["auc"].value > rows["loss"].metrics["auc"].value
    assert res.gate == "fail"  # the overfit model leaks more than the gate allows (measured AUC about 0.7)
    assert rows["rmia-online"].metrics["tpr_at_1pct_fpr"].n == 150


def test_recipe_from_the_policy_for_a_model_without_card(
    overfit: tuple[TrainedModel, Dataset], digits: Dataset
) -> None:
    model, small = overfit
    bare = TrainingData(small.x_train, small.y_train, None, "stated")
    with pytest.raises(ConfigError, match="cannot run"):
        run_assessment(model.classifier, digits.x_test, digits.y_test, _policy(), training=bare)
    recipe = {"architecture": "tabular-mlp", "arch_params": {"hidden": [128]}, "epochs": 80, "batch_size": 32}
    probe = {
        "family": "membership",
        "params": {**PROBE["params"], "attacks": ["loss", "rmia-online"], "recipe": recipe},
    }
    res = run_assessment(
        model.classifier,
        digits.x_test,
        digits.y_test,
        Policy.model_validate({"samples": 50, "probes": [probe]}),
        training=bare,
    )
    assert [r.at["attack"] for r in res.rows] == ["loss", "rmia-online"] and all(r.complete for r in res.rows)


def test_cli_knows_members_from_the_card_or_from_the_user(
    overfit: tuple[TrainedModel, Dataset], tmp_path: Path
) -> None:
    model, small = overfit
    path = tmp_path / "overfit.safetensors"
    save_model(model.module, model.card, path)
    data = tmp_path / "mine.npz"  # the user's own file: the model's training split and a test split
    np.savez(
        data,
        x_train=small.x_train.numpy(),
        y_train=small.y_train.numpy(),
        x_test=small.x_test.numpy(),
        y_test=small.y_test.numpy(),
    )
    (tmp_path / "p.yaml").write_text(json.dumps({"samples": 50, "probes": [PROBE]}))
    args = ["assess", str(path), "--data", str(data), "--policy", str(tmp_path / "p.yaml")]
    # the card recorded a digest of exactly these training points, so the npz's train split is known to be members
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    report = json.loads((tmp_path / "a" / "results.json").read_text())
    assert {r["at"]["attack"] for r in report["rows"]} >= {"rmia-online"}
    assert "Membership inference" in (tmp_path / "a" / "index.html").read_text()
    # the built-in digits' train split is not what it was trained on: the user must say so, or nothing runs
    assert (
        main(
            [
                "assess",
                str(path),
                "--data",
                "digits",
                "--policy",
                str(tmp_path / "p.yaml"),
                "--out",
                str(tmp_path / "b"),
            ]
        )
        == 2
    )
    assert main([*args, "--members", "test", "--out", str(tmp_path / "c")]) == 2
