"""Confident learning through cleanlab finds flipped digit labels with real precision and recall."""

from __future__ import annotations

import pytest
import torch

from bastion.attacks.poisoning import LabelFlip
from bastion.data import Dataset
from bastion.defenses.data import label_issues
from bastion.errors import ConfigError
from bastion.models.zoo.recipe import Recipe


def test_flipped_labels_are_found(digits: Dataset) -> None:
    flip = LabelFlip().poison(
        digits.x_train, digits.y_train, digits.spec, rate=0.1, generator=torch.Generator().manual_seed(0)
    )
    f = label_issues(digits, flip.x, flip.y, recipe=Recipe("digits-cnn", epochs=60), folds=3)[0]
    got = torch.zeros(flip.x.shape[0], dtype=torch.bool)
    got[torch.tensor(f.indices)] = True
    tp = int((got & flip.poisoned).sum())
    assert tp / int(got.sum()) >= 0.8 and tp / flip.count >= 0.7
    assert f.removable and list(f.scores) == sorted(f.scores)  # lowest label quality first


def test_given_probabilities_are_used_as_is(digits: Dataset) -> None:
    y = digits.y_train[:100]
    probs = torch.nn.functional.one_hot(y, 10).float() * 0.9 + 0.01
    probs[:5] = torch.nn.functional.one_hot((y[:5] + 1) % 10, 10).float() * 0.9 + 0.01
    f = label_issues(digits, digits.x_train[:100], y, pred_probs=probs)[0]
    assert set(f.indices) == set(range(5)) and f.details["probabilities"] == "given out-of-sample probabilities"
    with pytest.raises(ConfigError, match=r"pred_probs must be \(100, 10\)"):
        label_issues(digits, digits.x_train[:100], y, pred_probs=probs[:, :5])
