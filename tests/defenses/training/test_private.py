"""DP-SGD on Opacus: the target (epsilon, delta) is met and accounted as Opacus accounts it; bad settings refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bastion.data import Dataset
from bastion.defenses.training import PrivateTraining, private_train
from bastion.errors import ConfigError
from bastion.models.torch import TorchClassifier
from bastion.models.zoo import train_model


def test_dp_sgd_reaches_the_target_epsilon_and_a_useful_model(digits: Dataset) -> None:
    from opacus.accountants import PRVAccountant

    clf = train_model(digits, epochs=1, seed=0).classifier
    res = private_train(clf, digits.x_train, digits.y_train, PrivateTraining(epsilon=3.0, delta=1e-4, epochs=10))
    assert 2.7 <= res.epsilon <= 3.0 + 1e-6
    # the same (noise multiplier, sample rate, steps) accounted afresh by Opacus's PRV accountant
    acc = PRVAccountant()
    acc.history = [(res.noise_multiplier, res.sample_rate, res.steps)]
    assert acc.get_epsilon(delta=1e-4) == pytest.approx(res.epsilon, rel=1e-6)
    with torch.no_grad():
        accuracy = float((res.classifier.predict_logits(digits.x_test).argmax(1) == digits.y_test).float().mean())
    assert accuracy >= 0.7, accuracy  # measured 0.84 (a non-private model: 0.94)
    record = res.training_record()
    assert record["privacy"]["accountant"] == "prv" and record["privacy"]["max_grad_norm"] == 1.0
    assert record["privacy"]["steps"] == res.steps > 0 and len(record["history"]) == 10


class _WithBatchNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_unsupported_layers_are_named_and_fix_modules_replaces_them(digits: Dataset) -> None:
    spec = digits.spec
    with pytest.raises(ConfigError, match=r"BatchNorm.*--fix-modules"):
        private_train(
            TorchClassifier(_WithBatchNorm(), spec), digits.x_train, digits.y_train, PrivateTraining(epochs=1)
        )
    clf = TorchClassifier(_WithBatchNorm(), spec)
    res = private_train(clf, digits.x_train, digits.y_train, PrivateTraining(epochs=1, fix_modules=True, delta=1e-4))
    assert res.replaced_modules and not any(isinstance(m, nn.BatchNorm2d) for m in res.classifier.module.modules())


def test_bad_privacy_settings_say_what_to_fix(digits: Dataset) -> None:
    clf = train_model(digits, epochs=1, seed=0).classifier
    with pytest.raises(ConfigError, match="epsilon must be"):
        PrivateTraining(epsilon=0)
    with pytest.raises(ConfigError, match="delta must be"):
        PrivateTraining(delta=1.5)
    with pytest.raises(ConfigError, match="below 1/n"):
        private_train(clf, digits.x_train, digits.y_train, PrivateTraining(delta=0.01))
    with pytest.raises(ConfigError, match="batch_size"):
        private_train(clf, digits.x_train[:100], digits.y_train[:100], PrivateTraining(delta=1e-4, batch_size=256))
