"""The loss-threshold membership attack: chance on indistinguishable sets, above chance on an overfit model."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bastion.attacks.inference import loss_threshold
from bastion.data import Dataset
from bastion.errors import InputValidationError
from bastion.models.zoo import TrainedModel, train_model


def test_identical_sets_are_exactly_chance(digits_model: TrainedModel, digits: Dataset) -> None:
    same = (digits.x_test[:100], digits.y_test[:100])
    res = loss_threshold(digits_model.classifier, same, same)
    assert res.auc == pytest.approx(0.5) and res.members == res.non_members == 100


def test_an_overfit_model_leaks_membership(digits: Dataset) -> None:
    small = dataclasses.replace(digits, x_train=digits.x_train[:200], y_train=digits.y_train[:200])
    overfit = train_model(small, epochs=100, seed=0, batch_size=32)  # measured AUC 0.60
    res = loss_threshold(overfit.classifier, (small.x_train, small.y_train), (digits.x_test[:200], digits.y_test[:200]))
    assert res.auc >= 0.56 and res.advantage > 0.1


def test_bad_input_is_refused(digits_model: TrainedModel, digits: Dataset) -> None:
    with pytest.raises(InputValidationError, match="at least 10"):
        loss_threshold(digits_model.classifier, (digits.x_test[:5], digits.y_test[:5]), (digits.x_test, digits.y_test))
    with pytest.raises(InputValidationError):
        loss_threshold(
            digits_model.classifier, (digits.x_test.flatten(1), digits.y_test), (digits.x_test, digits.y_test)
        )


class _Fixed:
    """A 'model' answering given logits, row by row."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[x[:, 0].long()]


def test_scores_rank_as_minus_the_loss_without_float32_ties() -> None:
    from bastion.attacks.inference.membership import _scores

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 10, generator=g) * 3
    y = torch.randint(0, 10, (300,), generator=g)
    rows = torch.arange(300).float().unsqueeze(1)
    loss = torch.nn.functional.cross_entropy(logits.double(), y, reduction="none")
    assert torch.equal(_scores(_Fixed(logits), rows, y).argsort(), (-loss).argsort())
    # confidently right inputs: float32 losses are all exactly 0, the margins still order them
    confident = logits.clone()
    confident[torch.arange(300), y] = 40 + torch.arange(300).float() * 0.1
    f32 = torch.nn.functional.cross_entropy(confident, y, reduction="none")
    assert int((f32 == 0).sum()) == 300
    assert _scores(_Fixed(confident), rows, y).unique().numel() == 300
