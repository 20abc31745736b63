"""End to end on digits: a backdoor planted by each trigger attack works on the model trained with it, and the
clean model is the floor it is measured against."""

from __future__ import annotations

import pytest

from bastion.attacks.poisoning import BadNets, Blended, BlendTrigger, LabelFlip, PatchTrigger, poisoning_attack
from bastion.data import Dataset
from bastion.errors import ConfigError
from bastion.models.zoo import TrainedModel
from bastion.models.zoo.recipe import Recipe

RECIPE = Recipe("digits-cnn", epochs=15)


def test_badnets_backdoor_works_and_costs_little_accuracy(digits: Dataset, digits_model: TrainedModel) -> None:
    r = poisoning_attack(
        digits, BadNets(target=3, trigger=PatchTrigger(size=3)), rate=0.05, recipe=RECIPE, clean_model=digits_model
    )
    assert r.poisoned_count == round(0.05 * digits.x_train.shape[0])
    assert r.attack_success_rate is not None and r.baseline_success_rate is not None
    assert r.attack_success_rate > 0.8 > 0.2 > r.baseline_success_rate
    assert r.accuracy_drop < 0.05
    assert r.to_dict()["params"]["trigger"]["size"] == 3


def test_blended_backdoor_beats_the_clean_floor(digits: Dataset, digits_model: TrainedModel) -> None:
    r = poisoning_attack(
        digits, Blended(target=5, trigger=BlendTrigger(alpha=0.3)), rate=0.1, recipe=RECIPE, clean_model=digits_model
    )
    assert r.attack_success_rate is not None and r.baseline_success_rate is not None
    assert r.attack_success_rate > r.baseline_success_rate + 0.5


def test_random_label_flipping_has_no_success_rate_but_costs_accuracy(
    digits: Dataset, digits_model: TrainedModel
) -> None:
    r = poisoning_attack(digits, LabelFlip(), rate=0.4, recipe=RECIPE, clean_model=digits_model)
    assert r.attack_success_rate is None and r.success_inputs == 0
    assert r.poisoned.count == round(0.4 * digits.x_train.shape[0])


def test_a_measurement_without_test_data_is_refused(digits: Dataset) -> None:
    from dataclasses import replace

    empty = replace(digits, x_test=digits.x_test[:0], y_test=digits.y_test[:0])
    with pytest.raises(ConfigError, match="needs a test split"):
        poisoning_attack(empty, BadNets(), rate=0.05, recipe=RECIPE)
    with pytest.raises(ConfigError, match="larger than the 8x8 image"):
        poisoning_attack(digits, BadNets(trigger=PatchTrigger(size=12)), rate=0.05, recipe=RECIPE)
