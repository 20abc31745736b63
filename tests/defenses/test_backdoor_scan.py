"""Neural Cleanse flags a backdoored digits model and names its target, and leaves a clean one alone."""

from __future__ import annotations

import pytest
import torch

from bastion.attacks.poisoning import BadNets, PatchTrigger, poisoning_attack
from bastion.data import Dataset
from bastion.defenses.backdoor_scan import ScanSettings, anomaly_index, neural_cleanse
from bastion.errors import ConfigError
from bastion.models.zoo import TrainedModel
from bastion.models.zoo.recipe import Recipe

FAST = ScanSettings(steps=200)


def test_backdoored_model_is_flagged_with_its_target(digits: Dataset, digits_model: TrainedModel) -> None:
    attack = poisoning_attack(
        digits,
        BadNets(target=3, trigger=PatchTrigger(size=3)),
        rate=0.05,
        recipe=Recipe("digits-cnn", epochs=15),
        clean_model=digits_model,
    )
    scan = neural_cleanse(attack.model.classifier, digits.x_test, settings=FAST)
    assert scan.flagged[0] == 3 and scan.backdoored  # the most anomalous class is the target
    assert scan.norms[3] == min(scan.norms) and scan.success[3] >= 0.99
    assert scan.masks.shape == (10, 1, 8, 8) and scan.to_dict()["flagged_classes"][0] == 3


def test_clean_model_is_not_flagged(digits: Dataset, digits_model: TrainedModel) -> None:
    scan = neural_cleanse(digits_model.classifier, digits.x_test, settings=FAST)
    assert scan.flagged == () and max(scan.anomaly) < 2


def test_anomaly_index_is_robust_distance_below_the_median() -> None:
    idx = anomaly_index(torch.tensor([10.0, 11.0, 9.0, 10.0, 2.0, float("inf")]))
    assert float(idx[4]) > 5 and abs(float(idx[0])) < 1e-6 and idx[5] == -float("inf")


def test_scan_refuses_what_it_cannot_scan(digits: Dataset, digits_model: TrainedModel) -> None:
    with pytest.raises(ConfigError, match="steps must be an int"):
        neural_cleanse(digits_model.classifier, digits.x_test, settings=ScanSettings(steps=0))
    with pytest.raises(ConfigError, match="at least 2 clean inputs"):
        neural_cleanse(digits_model.classifier, digits.x_test[:1])
    with pytest.raises(ConfigError, match="differentiable model"):
        neural_cleanse(object(), digits.x_test)
