"""Compare an assessment with an earlier one (its ``results.json``) and name every regression beyond a tolerance."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.assess.families import FAMILIES
from bastion.errors import ConfigError, UnknownNameError


@dataclass(frozen=True)
class Regression:
    entry: str
    at: dict[str, Any]
    metric: str
    baseline: float
    current: float

    def describe(self) -> str:
        where = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.at.items())
        return f"{self.metric} under {self.entry} at {where}: {self.baseline:.4g} before, {self.current:.4g} now"


def read_baseline(path: Path) -> list[dict[str, Any]]:
    """The metric rows of an earlier ``results.json``."""
    if not path.is_file():
        raise ConfigError(f"baseline {path} does not exist; pass the results.json of an earlier assess run")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"baseline {path} is not valid JSON: {e}") from None
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise ConfigError(f"baseline {path} has no metric rows; it must be a results.json from this Bastion version")
    return rows


def _key(row: Mapping[str, Any]) -> tuple[str, str]:
    return str(row.get("entry")), json.dumps(row.get("at", {}), sort_keys=True)


def regressions(
    current: Iterable[Mapping[str, Any]], baseline: Iterable[Mapping[str, Any]], tolerance: float
) -> list[Regression]:
    """Fraction metrics that got worse by more than ``tolerance`` (absolute) on rows present in both runs."""
    if not (math.isfinite(tolerance) and 0 <= tolerance <= 1):
        raise ConfigError(f"tolerance must be in [0, 1] (an absolute change of a rate), got {tolerance}")
    before = {_key(r): r for r in baseline}
    out = []
    for row in current:
        old = before.get(_key(row))
        if old is None or not row.get("complete", True):
            continue
        try:
            metrics = FAMILIES.get(str(row.get("family", "evasion"))).metrics
        except UnknownNameError:
            continue
        for name, est in row.get("metrics", {}).items():
            info = metrics.get(name)
            prev = old.get("metrics", {}).get(name)
            if info is None or info.kind != "fraction" or not isinstance(prev, dict):
                continue
            now, then = float(est["value"]), float(prev["value"])
            worse = then - now if info.better == "higher" else now - then
            if worse > tolerance + 1e-12:
                out.append(Regression(str(row["entry"]), dict(row.get("at", {})), name, then, now))
    return out
