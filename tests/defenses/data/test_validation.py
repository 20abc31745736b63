"""Each validation check finds what was planted in digits, names the rows, and stays quiet on the clean data."""

from __future__ import annotations

import torch

from bastion.data import Dataset
from bastion.defenses.data import validation as v
from bastion.types import ModelSpec


def test_clean_digits_pass_every_structural_check(digits: Dataset) -> None:
    x, y = digits.x_train, digits.y_train
    assert v.schema(x, y, digits.spec) == []
    assert v.value_range(x, digits.spec) == []
    assert v.duplicates(x, y) == []
    assert v.test_leakage(x, digits.x_test) == []
    assert [f.severity for f in v.class_balance(y, digits.spec)] == ["info"]


def test_schema_and_range_name_the_broken_rows(digits: Dataset) -> None:
    x, y = digits.x_train[:100].clone(), digits.y_train[:100].clone()
    x[3, 0, 0, 0] = float("nan")
    x[7, 0, 1, 1] = 1.5
    y[9] = 12
    schema = v.schema(x, y, digits.spec)
    assert {f.indices for f in schema} == {(3,), (9,)} and all(f.removable for f in schema)
    rng = v.value_range(x, digits.spec)
    assert rng[0].indices == (7,) and abs(rng[0].scores[0] - 0.5) < 1e-6
    wrong = v.schema(x.flatten(1), y, digits.spec)
    assert wrong[0].severity == "error" and "expected (N, 1, 8, 8)" in wrong[0].message


def test_duplicates_split_into_copies_and_conflicts(digits: Dataset) -> None:
    x, y = digits.x_train[:200].clone(), digits.y_train[:200].clone()
    x[150], y[150] = x[10], y[10]  # a copy with the same label
    x[160], y[160] = x[20], (y[20] + 1) % 10  # a copy with another label
    found = {f.check: f for f in v.duplicates(x, y)}
    assert found["duplicates"].indices == (150,)
    assert found["conflicting-duplicates"].indices == (20, 160)
    assert v.test_leakage(x, torch.cat([digits.x_test[:5], x[42:43]]))[0].indices == (42,)


def test_near_duplicates_are_reported_not_removed(digits: Dataset) -> None:
    x, y = digits.x_train[:300].clone(), digits.y_train[:300].clone()
    x[250] = (x[5] + 0.01).clamp(0, 1)
    x[260], y[260] = (x[6] - 0.01).clamp(0, 1), (y[6] + 3) % 10
    found = v.near_duplicates(x, y, digits.spec)
    assert len(found) == 1 and not found[0].removable and found[0].severity == "warning"
    assert set(found[0].indices) >= {250, 260}
    assert [6, 260] in [list(p) for p in found[0].details["conflicting_pairs"]]


def test_class_balance_warns_on_a_starved_class() -> None:
    spec = ModelSpec(input_shape=(2,), num_classes=3, bounds=(0.0, 1.0))
    y = torch.tensor([0] * 50 + [1] * 40 + [2] * 5)
    f = v.class_balance(y, spec)[0]
    assert f.severity == "warning" and "10.0x" in f.message and f.details["counts"]["2"] == 5
    assert "no training data: 2" in v.class_balance(torch.tensor([0, 1, 1]), spec)[0].message
