"""Assess policies: which probes to run, and the thresholds that make the assessment a CI gate.

A policy is a YAML (or JSON) file; its schema is enforced strictly so that a typo is an error, not a silently
ignored setting. ``attacks`` are evasion entries (attack, norm, eps sweep); ``probes`` are entries of any other
family (``{family: corruption, params: {...}}``). A threshold names an entry (``probe``, or ``attack`` as before),
selects one of its rows (``eps: 0.1`` or ``at: {corruption: contrast, severity: 5}``) and bounds any metric that
family produces, optionally on its confidence interval (``bound: lower``). Everything is checked at load time:
unknown metrics, rows that will not exist, fractions outside [0, 1], attack settings that cannot run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bastion._validate import pydantic_problems
from bastion.assess.families import FAMILIES
from bastion.assess.families.base import AtValue, Family, parse_settings
from bastion.assess.families.evasion import AttackEntry
from bastion.errors import BastionError, PolicyError

__all__ = ["AttackEntry", "Entry", "Policy", "ProbeEntry", "Threshold", "load_policy", "parse_policy"]

SANITY_CHECKS = ("gradients", "randomness", "monotonic", "black-beats-white")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProbeEntry(_Strict):
    """An entry of any registered family: ``{family: corruption, id: noise, params: {severities: [1, 5]}}``."""

    family: str
    id: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    """A policy entry resolved: its id, its family and the family's validated settings."""

    id: str
    family: Family
    settings: Any


def _same(a: AtValue, b: AtValue) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return str(a) == str(b)


class Threshold(_Strict):
    """A pass/fail rule on one metric of one row of one entry, e.g. robust accuracy under pgd-linf at 0.1 >= 0.5."""

    probe: str | None = None
    attack: str | None = None  # the same as probe (the name policies used before families)
    eps: float | None = None
    at: dict[str, AtValue] = Field(default_factory=dict)
    metric: str = "robust_accuracy"
    min: float | None = None
    max: float | None = None
    bound: Literal["point", "lower", "upper"] = "point"

    @model_validator(mode="after")
    def _shape(self) -> Threshold:
        if (self.min is None) == (self.max is None):
            raise ValueError("give exactly one of min or max")
        if (self.probe is None) == (self.attack is None):
            raise ValueError("name the entry it gates with probe: ENTRY_ID (or attack:, its older name)")
        return self

    @property
    def entry(self) -> str:
        return str(self.probe or self.attack)

    @property
    def selector(self) -> dict[str, AtValue]:
        return {**self.at, **({"eps": self.eps} if self.eps is not None else {})}

    def matches(self, at: Mapping[str, AtValue]) -> bool:
        return all(k in at and _same(at[k], v) for k, v in self.selector.items())

    @property
    def limit(self) -> float:
        return float(self.min if self.min is not None else self.max)  # type: ignore[arg-type]

    def describe(self) -> str:
        op = ">=" if self.min is not None else "<="
        where = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.selector.items())
        which = "" if self.bound == "point" else f" ({self.bound} confidence bound)"
        return f"{self.metric}{which} under {self.entry}{' at ' + where if where else ''} {op} {self.limit:g}"

    def passes(self, value: float) -> bool:
        return value >= self.limit if self.min is not None else value <= self.limit


class Policy(_Strict):
    """A whole assess policy."""

    version: Literal[1] = 1
    name: str = "custom"
    samples: int = Field(default=300, ge=1, le=100_000)
    batch_size: int = Field(default=500, ge=1, le=100_000)
    seed: int = 0
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    attacks: list[AttackEntry] = Field(default_factory=list)
    probes: list[ProbeEntry] = Field(default_factory=list)
    thresholds: list[Threshold] = Field(default_factory=list)
    accept_sanity: list[Literal["gradients", "randomness", "monotonic", "black-beats-white"]] = Field(
        default_factory=list
    )

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        if not self.attacks and not self.probes:
            raise ValueError("the policy runs nothing: add attacks (evasion) or probes (any family)")
        entries = self.entries()
        keys = [e.id for e in entries]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ValueError(f"entry ids must be unique; give each entry an id (duplicates: {', '.join(dup)})")
        problems = []
        for i, t in enumerate(self.thresholds):
            problems += _threshold_problems(i, t, entries)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def entries(self) -> list[Entry]:
        """Every entry in policy order, evasion first; evasion entries learn which budget the report shows."""
        out = []
        evasion = FAMILIES.get("evasion")
        for a in self.attacks:
            show = next((t.eps for t in self.thresholds if t.entry == a.key and t.eps is not None), None)
            settings = a.model_copy(update={"showcase_eps": show}) if show is not None and a.showcase_eps is None else a
            out.append(Entry(a.key, evasion, settings))
        for i, p in enumerate(self.probes):
            family = FAMILIES.get(p.family)
            settings = parse_settings(family, p.params, f"probes[{i}]")
            out.append(Entry(p.id or family.default_id(settings), family, settings))
        return out

    def white_box_attacks(self) -> list[str]:
        """Ids of the policy's entries that need gradients (they cannot run against an endpoint): white-box
        attacks, and probes whose family says so (``needs_gradients``, e.g. white-box inversion)."""
        found = [e.key for e in self.attacks if getattr(e.build(e.eps[0]), "white_box", True)]
        for e in self.entries():
            needs = getattr(e.family, "needs_gradients", None)
            if e.family.name != "evasion" and callable(needs) and needs(e.settings):
                found.append(e.id)
        return found

    def check_attacks(self) -> None:
        """Build every entry once (e.g. instantiate its attacks), so a bad setting fails before any work starts."""
        problems = []
        for e in self.entries():
            try:
                problems += [f"{e.id}: {p}" for p in e.family.check(e.settings)]
            except BastionError as exc:
                problems.append(f"{e.id}: {exc}")
        if problems:
            raise PolicyError("the policy configures probes that cannot run", problems=problems)


def _threshold_problems(i: int, t: Threshold, entries: list[Entry]) -> list[str]:
    entry = next((e for e in entries if e.id == t.entry), None)
    if entry is None:
        return [
            f"thresholds[{i}] names {t.entry!r}, which the policy does not run (its entries: "
            f"{', '.join(e.id for e in entries)})"
        ]
    problems = []
    info = entry.family.metrics.get(t.metric)
    if info is None:
        problems.append(
            f"thresholds[{i}] gates metric {t.metric!r}, which {entry.family.name} does not produce "
            f"(it has: {', '.join(entry.family.metrics)})"
        )
    elif info.kind == "fraction" and not 0.0 <= t.limit <= 1.0:
        hint = f"; did you mean {t.limit / 100:g}?" if 1.0 < t.limit <= 100.0 else ""
        problems.append(f"thresholds[{i}]: {t.metric} is a fraction in [0, 1] but the limit is {t.limit:g}{hint}")
    rows = [r for r in entry.family.planned_rows(entry.settings) if t.matches(r)]
    if not rows:
        planned = entry.family.planned_rows(entry.settings)
        problems.append(f"thresholds[{i}] selects {t.selector or 'no row'} but {t.entry} runs {planned}")
    elif len(rows) > 1:
        problems.append(
            f"thresholds[{i}] matches {len(rows)} rows of {t.entry}; select one with eps: or at: (e.g. at: {rows[0]})"
        )
    return problems


def parse_policy(data: Any, *, source: str = "policy") -> Policy:
    """Validate policy data (a mapping as read from YAML/JSON)."""
    if not isinstance(data, dict):
        raise PolicyError(f"{source} must be a mapping at its top level, got {type(data).__name__}")
    try:
        policy = Policy.model_validate(data)
    except ValidationError as e:
        raise PolicyError(f"{source} is not a valid assess policy", problems=pydantic_problems(e)) from None
    except BastionError as e:  # an unknown family or bad family settings, found while resolving entries
        raise PolicyError(f"{source} is not a valid assess policy: {e}") from None
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
