"""Assess policies: which attacks to run at which budgets, and the thresholds that make it a CI gate.

A policy is a YAML (or JSON) file; its schema is enforced strictly so that a typo is an error, not a silently
ignored setting. Attacks are instantiated at load time, so a bad attack setting fails before any work starts.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bastion._validate import pydantic_problems
from bastion.attacks import create_attack
from bastion.attacks.base import Attack
from bastion.errors import BastionError, PolicyError
from bastion.types import Norm, ThreatModel

Metric = Literal["robust_accuracy", "success_rate"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AttackEntry(_Strict):
    """One attack of the policy, run once per budget in ``eps``."""

    id: str | None = None
    attack: str
    norm: Literal["linf", "l2"] = "linf"
    eps: list[float] = Field(min_length=1)
    targeted: bool = False
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("eps")
    @classmethod
    def _eps_positive(cls, v: list[float]) -> list[float]:
        bad = [e for e in v if not math.isfinite(e) or e <= 0]
        if bad:
            raise ValueError(f"every eps must be a finite number > 0, got {bad}")
        if len(set(v)) != len(v):
            raise ValueError("eps values must be distinct")
        return sorted(v)

    @property
    def key(self) -> str:
        return self.id or f"{self.attack}-{self.norm}"

    def build(self, eps: float) -> Attack:
        threat = ThreatModel(norm=Norm.parse(self.norm), eps=eps, targeted=self.targeted)
        return create_attack(self.attack, threat, **self.params)


class Threshold(_Strict):
    """A pass/fail rule on one attack at one budget, e.g. robust accuracy under pgd-linf at 0.1 >= 0.5."""

    attack: str
    eps: float
    metric: Metric = "robust_accuracy"
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> Threshold:
        if (self.min is None) == (self.max is None):
            raise ValueError("give exactly one of min or max")
        return self

    def describe(self) -> str:
        op, limit = (">=", self.min) if self.min is not None else ("<=", self.max)
        return f"{self.metric} under {self.attack} at eps {self.eps:g} {op} {limit:g}"

    def passes(self, value: float) -> bool:
        if self.min is not None:
            return value >= self.min
        assert self.max is not None
        return value <= self.max


class Policy(_Strict):
    """A whole assess policy."""

    version: Literal[1] = 1
    name: str = "custom"
    samples: int = Field(default=300, ge=1, le=100_000)
    batch_size: int = Field(default=500, ge=1, le=100_000)
    seed: int = 0
    attacks: list[AttackEntry] = Field(min_length=1)
    thresholds: list[Threshold] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        keys = [a.key for a in self.attacks]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ValueError(f"attack ids must be unique; give each entry an id (duplicates: {', '.join(dup)})")
        for i, t in enumerate(self.thresholds):
            entry = next((a for a in self.attacks if a.key == t.attack), None)
            if entry is None:
                raise ValueError(
                    f"thresholds[{i}] names attack {t.attack!r}, which the policy does not run "
                    f"(its attacks: {', '.join(keys)})"
                )
            if not any(math.isclose(t.eps, e, rel_tol=1e-9) for e in entry.eps):
                raise ValueError(f"thresholds[{i}] uses eps {t.eps:g} but {t.attack} runs at {entry.eps}")
        return self

    def white_box_attacks(self) -> list[str]:
        """Ids of the policy's attacks that need gradients (they cannot run against an endpoint)."""
        return [e.key for e in self.attacks if getattr(e.build(e.eps[0]), "white_box", True)]

    def check_attacks(self) -> None:
        """Instantiate every configured attack once, so a bad setting fails before any work starts."""
        problems = []
        for i, entry in enumerate(self.attacks):
            try:
                entry.build(entry.eps[0])
            except BastionError as e:
                problems.append(f"attacks[{i}] ({entry.key}): {e}")
        if problems:
            raise PolicyError("the policy configures attacks that cannot run", problems=problems)


def parse_policy(data: Any, *, source: str = "policy") -> Policy:
    """Validate policy data (a mapping as read from YAML/JSON)."""
    if not isinstance(data, dict):
        raise PolicyError(f"{source} must be a mapping at its top level, got {type(data).__name__}")
    try:
        policy = Policy.model_validate(data)
    except ValidationError as e:
        raise PolicyError(f"{source} is not a valid assess policy", problems=pydantic_problems(e)) from None
    policy.check_attacks()
    return policy


BUILT_IN = ("default", "blackbox")


def load_policy(path: str | Path | None = None, *, built_in: str = "default") -> Policy:
    """Load a policy file (YAML or JSON); ``None`` loads the built-in policy ``built_in`` (default, blackbox)."""
    if path is None:
        if built_in not in BUILT_IN:
            raise PolicyError(f"no built-in policy {built_in!r}; choose one of: {', '.join(BUILT_IN)}")
        text = resources.files("bastion.assess").joinpath(f"policies/{built_in}.yaml").read_text()
        return parse_policy(yaml.safe_load(text), source=f"built-in {built_in} policy")
    p = Path(path)
    if not p.is_file():
        raise PolicyError(f"policy file {p} does not exist")
    text = p.read_text()
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise PolicyError(f"policy file {p} is not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {e}") from None
    return parse_policy(data, source=f"policy file {p}")
