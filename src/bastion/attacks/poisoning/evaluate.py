"""Measure a poisoning attack end to end: poison a copy of the training set, train on it with the target's recipe,
and compare with the same recipe trained on the clean set.

The figures are the poisoned model's clean accuracy (a backdoor that costs accuracy gets noticed), the attack
success rate (triggered test inputs of other classes answered as the target; for targeted label flipping, source
inputs answered as the target) and the same rate on the clean model, which is the floor the attack is measured
against (a few inputs of other classes are answered as the target anyway).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from bastion._progress import NullProgress, Progress
from bastion._torch import make_generator
from bastion.attacks.poisoning.base import PoisonedSet, PoisoningAttack, check_rate
from bastion.errors import ConfigError
from bastion.models.zoo.recipe import Recipe, train_recipe


@dataclass(frozen=True)
class PoisoningResult:
    """What one attack did to a model trained by the recipe."""

    attack: str
    params: dict[str, Any]
    rate: float
    poisoned_count: int
    clean_accuracy: float  # of the model trained on the poisoned set, on the clean test split
    baseline_accuracy: float  # of the same recipe trained on the clean set
    attack_success_rate: float | None  # None: the attack has no trigger and no target
    baseline_success_rate: float | None  # the clean model's rate on the same inputs
    success_inputs: int
    seconds: float
    poisoned: PoisonedSet = field(repr=False, compare=False)
    model: Any = field(default=None, repr=False, compare=False)

    @property
    def accuracy_drop(self) -> float:
        return self.baseline_accuracy - self.clean_accuracy

    def to_dict(self) -> dict[str, Any]:
        return {
            "attack": self.attack,
            "params": self.params,
            "rate": self.rate,
            "poisoned_count": self.poisoned_count,
            "clean_accuracy": self.clean_accuracy,
            "baseline_accuracy": self.baseline_accuracy,
            "accuracy_drop": self.accuracy_drop,
            "attack_success_rate": self.attack_success_rate,
            "baseline_success_rate": self.baseline_success_rate,
            "success_inputs": self.success_inputs,
            "seconds": self.seconds,
        }


def success_rate(model: Any, attack: PoisoningAttack, x: Tensor, y: Tensor, spec: Any) -> tuple[float | None, int]:
    """The share of the attack's triggered test inputs that ``model`` answers as its target, and how many count."""
    got = attack.triggered(x, y, spec)
    target = getattr(attack, "target", None)
    if got is None or target is None:
        return None, 0
    xt, counts = got
    if int(counts.sum()) == 0:
        return None, 0
    pred = model.predict_logits(xt[counts]).argmax(1)
    return float((pred == target).float().mean()), int(counts.sum())


def poisoning_attack(
    dataset: Any,
    attack: PoisoningAttack,
    *,
    rate: float,
    recipe: Recipe,
    seed: int = 0,
    clean_model: Any = None,
    progress: Progress | None = None,
) -> PoisoningResult:
    """Poison ``dataset``'s training split with ``attack`` at ``rate``, train ``recipe`` on it (and on the clean
    split unless ``clean_model``, a TrainedModel of the same recipe, is given) and measure both on the test split.

    A clean-label attack without a surrogate gets the clean model as its surrogate (the attacker's own model of the
    same kind)."""
    rate = check_rate(rate)
    problems = attack.problems(dataset.spec)
    if problems:
        raise ConfigError(f"invalid {attack.name} settings", problems=problems)
    if dataset.x_test.shape[0] == 0:
        raise ConfigError("measuring a poisoning attack needs a test split: give data with x_test/y_test")
    progress = progress or NullProgress()
    start = time.perf_counter()
    if clean_model is None:
        clean_model = train_recipe(recipe, dataset, dataset.x_train, dataset.y_train, seed=seed, progress=progress)
    if getattr(attack, "surrogate", "absent") is None:
        attack = attack.with_surrogate(clean_model.classifier)  # type: ignore[attr-defined]
    poisoned = attack.poison(dataset.x_train, dataset.y_train, dataset.spec, rate=rate, generator=make_generator(seed))
    model = train_recipe(recipe, dataset, poisoned.x, poisoned.y, seed=seed, progress=progress)
    asr, counted = success_rate(model.classifier, attack, dataset.x_test, dataset.y_test, dataset.spec)
    base_asr, _ = success_rate(clean_model.classifier, attack, dataset.x_test, dataset.y_test, dataset.spec)
    return PoisoningResult(
        attack=attack.name,
        params=attack.to_dict(),
        rate=rate,
        poisoned_count=poisoned.count,
        clean_accuracy=float(model.card.clean_accuracy),
        baseline_accuracy=float(clean_model.card.clean_accuracy),
        attack_success_rate=asr,
        baseline_success_rate=base_asr,
        success_inputs=counted,
        seconds=time.perf_counter() - start,
        poisoned=poisoned,
        model=model,
    )
