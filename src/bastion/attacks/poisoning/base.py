"""Poisoning attacks as data transformations: each returns a poisoned copy of a training set and says which rows it
changed, so a detector can be scored against the truth and an assessment can train on it.

An attack is registered in :data:`POISONING_ATTACKS` and passes tests/attacks/contracts/test_poisoning_contract.py:
``poison`` never modifies its inputs, changes exactly the rows it reports, keeps every input inside the data's
bounds and gives the same poisoned set for the same seed; ``triggered`` turns test inputs into what the attacker
will send at inference time (``None`` for attacks without a trigger, such as label flipping).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor

from bastion._registry import Registry
from bastion.errors import ConfigError
from bastion.types import ModelSpec


@dataclass(frozen=True)
class PoisonedSet:
    """A poisoned copy of a training set: inputs ``x``, labels ``y`` and ``poisoned`` (N,) bool, True for every row
    the attack changed (its input, its label or both). ``target`` is the class the attacker wants (None for
    untargeted label flipping); ``source`` the class it attacks (None: every other class)."""

    x: Tensor
    y: Tensor
    poisoned: Tensor
    attack: str
    target: int | None
    source: int | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def indices(self) -> Tensor:
        return self.poisoned.nonzero().flatten()

    @property
    def count(self) -> int:
        return int(self.poisoned.sum())


class PoisoningAttack(Protocol):
    """A poisoning attack. ``rate`` is the share of the whole training set it changes, in (0, 1)."""

    name: ClassVar[str]
    atlas: ClassVar[str]

    def problems(self, spec: ModelSpec) -> list[str]:
        """What is wrong with the settings for data of ``spec`` (empty when fine)."""
        ...

    def poison(self, x: Tensor, y: Tensor, spec: ModelSpec, *, rate: float, generator: torch.Generator) -> PoisonedSet:
        """A poisoned copy of ``(x, y)`` with ``round(rate * N)`` rows changed."""
        ...

    def triggered(self, x: Tensor, y: Tensor, spec: ModelSpec) -> tuple[Tensor, Tensor] | None:
        """Test inputs as the attacker sends them and the mask of those that count for the attack success rate
        (inputs not already of the target class); ``None`` when the attack has no trigger."""
        ...

    def to_dict(self) -> dict[str, Any]: ...


POISONING_ATTACKS: Registry[type[Any]] = Registry("poisoning attack")


def check_rate(rate: object) -> float:
    """``rate`` as a float in (0, 1), or a ConfigError that says so."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or not 0 < rate < 1:
        raise ConfigError(f"the poisoning rate must be a share of the training set in (0, 1), e.g. 0.05; got {rate!r}")
    return float(rate)


def check_class(name: str, value: object, spec: ModelSpec) -> list[str]:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < spec.num_classes:
        return [f"{name} must be a class index in [0, {spec.num_classes - 1}], got {value!r}"]
    return []


def pick(candidates: Tensor, count: int, generator: torch.Generator, what: str) -> Tensor:
    """``count`` of the ``candidates`` indices, drawn without replacement."""
    if count < 1:
        raise ConfigError(f"the poisoning rate selects no {what}: raise the rate or use a larger training set")
    if count > candidates.numel():
        raise ConfigError(
            f"the poisoning rate asks for {count} {what} but only {candidates.numel()} exist: lower the rate"
        )
    return candidates[torch.randperm(candidates.numel(), generator=generator)[:count]]


def check_inputs(x: Tensor, y: Tensor, spec: ModelSpec) -> None:
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise ConfigError("poisoning needs inputs and labels as tensors")
    if x.shape[0] != y.shape[0] or tuple(x.shape[1:]) != tuple(spec.input_shape):
        raise ConfigError(
            f"poisoning needs inputs (N, {', '.join(map(str, spec.input_shape))}) and N labels, got "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )


def dirty_label(
    attack: Any, x: Tensor, y: Tensor, spec: ModelSpec, *, rate: float, generator: torch.Generator
) -> PoisonedSet:
    """A trigger stamped on ``rate * N`` inputs of other classes, relabelled to ``attack.target`` (BadNets and
    blended backdoors poison this way)."""
    rate = check_rate(rate)
    check_inputs(x, y, spec)
    problems = attack.problems(spec)
    if problems:
        raise ConfigError(f"invalid {attack.name} settings", problems=problems)
    idx = pick((y != attack.target).nonzero().flatten(), round(rate * y.shape[0]), generator, "inputs of other classes")
    px, py = x.clone(), y.clone()
    px[idx] = attack.trigger.apply(x[idx], spec)
    py[idx] = attack.target
    mask = torch.zeros(y.shape[0], dtype=torch.bool)
    mask[idx] = True
    return PoisonedSet(px, py, mask, attack.name, attack.target, None, attack.to_dict() | {"rate": rate})


def triggered_others(attack: Any, x: Tensor, y: Tensor, spec: ModelSpec) -> tuple[Tensor, Tensor]:
    """Every test input with the trigger, and the mask of those not already of the target class."""
    return attack.trigger.apply(x, spec), y != attack.target


@dataclass(frozen=True)
class TriggerBackdoor:
    """A dirty-label backdoor: the subclass says which ``trigger`` (a field) and registers itself."""

    name: ClassVar[str]
    atlas: ClassVar[str] = "AML.T0020"
    target: int = 0

    def problems(self, spec: ModelSpec) -> list[str]:
        return check_class("target", self.target, spec) + self.trigger.problems(spec)  # type: ignore[attr-defined]

    def poison(self, x: Tensor, y: Tensor, spec: ModelSpec, *, rate: float, generator: torch.Generator) -> PoisonedSet:
        return dirty_label(self, x, y, spec, rate=rate, generator=generator)

    def triggered(self, x: Tensor, y: Tensor, spec: ModelSpec) -> tuple[Tensor, Tensor] | None:
        return triggered_others(self, x, y, spec)

    def to_dict(self) -> dict[str, Any]:
        return {"attack": self.name, "target": self.target, "trigger": self.trigger.to_dict()}  # type: ignore[attr-defined]
