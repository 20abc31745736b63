"""A Fashion-MNIST model trained on a BadNets-poisoned set, once per session: the smallest real setting where a
backdoor leaves the separated cluster poison detection looks for (on 8x8 digits it does not; bench/RESULTS.md)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest
import torch

from bastion.attacks.poisoning import BadNets, PatchTrigger, PoisonedSet
from bastion.data import Dataset, load_dataset
from bastion.models.zoo.recipe import Recipe, train_recipe

# 5,000 images, 8 epochs at batch 32 (1,250 steps): fewer steps leave the poisoned cluster joined to its class
RECIPE = Recipe("fmnist-cnn", epochs=8, batch_size=32)


@dataclass(frozen=True)
class Poisoned:
    data: Dataset  # the clean subset
    poisoned: PoisonedSet
    model: Any  # TrainedModel on the poisoned set


@pytest.fixture(scope="session")
def fmnist_badnets() -> Poisoned:
    ds = load_dataset("fashion-mnist")
    small = replace(
        ds, x_train=ds.x_train[:5000], y_train=ds.y_train[:5000], x_test=ds.x_test[:1000], y_test=ds.y_test[:1000]
    )
    ps = BadNets(target=0, trigger=PatchTrigger(size=3)).poison(
        small.x_train, small.y_train, small.spec, rate=0.05, generator=torch.Generator().manual_seed(0)
    )
    return Poisoned(small, ps, train_recipe(RECIPE, small, ps.x, ps.y, seed=0))
