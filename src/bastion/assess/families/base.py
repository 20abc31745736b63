"""The extension point of an assessment: a threat family runs policy entries and produces named metrics.

A policy entry names a family (``evasion``, ``corruption``, ...) and its settings; the family measures one or more
*rows*, each a point of its own sweep (an eps, a corruption at a severity) with named metrics. Thresholds select a
row by its ``at`` keys and gate on any metric, so a new family needs no change to the runner, the policy or the
gate. See docs/assess-families.md for a complete small example.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import Tensor

from bastion._progress import Progress
from bastion._registry import Registry
from bastion._validate import pydantic_problems
from bastion.assess.metrics import Estimate, MetricInfo
from bastion.errors import PolicyError
from bastion.models.base import Classifier

AtValue = float | str
GeneratorFor = Callable[[Mapping[str, AtValue]], torch.Generator]


class FamilySettings(BaseModel):
    """Base of each family's settings model: strict, so a typo in a policy is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class TrainingData:
    """What the model was trained on, when the user or its card says so: the members for membership inference.

    ``card`` is the model's Bastion card (its recipe trains reference models), None for a model from elsewhere;
    ``source`` says where the claim came from (for the report)."""

    x: Tensor
    y: Tensor
    card: Any = None
    source: str = ""


@dataclass(frozen=True)
class AssessData:
    """The assessed inputs, shared by every family: a seeded subset of the test split and the clean predictions.

    ``reference_x`` / ``reference_y`` are the rest of the test split: clean data, disjoint from the assessed inputs,
    for families that must fit something first (the detection family fits its detectors on them). ``training`` is
    the model's training data when known (membership inference needs it)."""

    x: Tensor
    y: Tensor
    indices: Tensor
    clean_pred: Tensor
    batch_size: int
    confidence: float
    reference_x: Tensor | None = None
    reference_y: Tensor | None = None
    training: TrainingData | None = None

    @property
    def correct(self) -> Tensor:
        return self.clean_pred == self.y

    @property
    def n(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class MetricRow:
    """One point of an entry's sweep: ``at`` names it (e.g. ``{"eps": 0.1}``), ``metrics`` hold what was measured.

    ``complete`` is False when the measurement was cut short (``note`` says why); thresholds on it are
    inconclusive, never passed.
    """

    entry: str
    at: dict[str, AtValue]
    metrics: dict[str, Estimate]
    complete: bool = True
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "entry": self.entry,
            "at": dict(self.at),
            "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
            "complete": self.complete,
            "note": self.note,
        }


@dataclass(frozen=True)
class FamilyResult:
    """What one policy entry produced: its rows, plus family-specific data (``payload``) for its report section."""

    family: str
    entry: str
    rows: tuple[MetricRow, ...]
    payload: Any = None
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        return all(r.complete for r in self.rows)


@dataclass(frozen=True)
class ReportSection:
    """A family's part of the report as plain data: a title, prose, tables and figures (PNG bytes + caption)."""

    id: str
    title: str
    intro: str = ""
    tables: tuple[tuple[tuple[str, ...], tuple[tuple[str, ...], ...]], ...] = ()
    figures: tuple[tuple[bytes, str], ...] = ()
    data: dict[str, Any] = field(default_factory=dict)


class Family(Protocol):
    """A threat family. Implementations are registered in :data:`FAMILIES` and must pass tests/assess/contracts."""

    name: ClassVar[str]
    metrics: ClassVar[dict[str, MetricInfo]]
    settings: ClassVar[type[FamilySettings]]

    def default_id(self, settings: Any) -> str:
        """The entry id when the policy gives none (ids name entries in thresholds and the report)."""
        ...

    def planned_rows(self, settings: Any) -> list[dict[str, AtValue]]:
        """The ``at`` keys of the rows :meth:`run` will produce, so thresholds are checked before any work."""
        ...

    def check(self, settings: Any) -> list[str]:
        """Problems with settings that need more than the schema (e.g. building an attack); empty when fine."""
        ...

    def check_data(self, settings: Any, data: AssessData) -> list[str]:
        """Problems with the data for these settings (e.g. no training data for membership inference), found by
        the runner before any entry runs; empty when fine."""
        ...

    def run(
        self,
        model: Classifier,
        data: AssessData,
        settings: Any,
        *,
        entry: str,
        generator_for: GeneratorFor,
        progress: Progress,
    ) -> FamilyResult:
        """Measure every row. Each row's randomness comes from ``generator_for(at)``, so results never depend on
        which entries ran before."""
        ...

    def section(self, results: list[FamilyResult], class_names: tuple[str, ...]) -> ReportSection | None:
        """This family's report section over all its entries (``None``: the report renders it itself)."""
        ...


FAMILIES: Registry[Family] = Registry("assessment family")


def not_run(family: str, entry: str, planned: list[dict[str, AtValue]], why: str, started: float) -> FamilyResult:
    """Every planned row incomplete with the same reason: thresholds on them are inconclusive, never passed."""
    import time

    rows = tuple(MetricRow(entry, at, {}, complete=False, note=f"not run: {why}") for at in planned)
    return FamilyResult(family, entry, rows, seconds=time.perf_counter() - started)


def degraded(model: Any, rows: tuple[MetricRow, ...]) -> tuple[MetricRow, ...]:
    """``rows`` marked incomplete when the model (an endpoint) degraded its answers during the run (rounding, labels
    only, a raised threat level): a leak measured on degraded answers understates the model's, so a threshold on it
    must be inconclusive, never a pass."""
    seen = getattr(model, "degradations", None)
    if not isinstance(seen, list) or not seen:
        return rows
    note = f"answers degraded during the run ({seen[-1]})"
    return tuple(
        MetricRow(r.entry, r.at, r.metrics, complete=False, note=f"{r.note}; {note}" if r.note else note) for r in rows
    )


def figure_png(fig: Any, dpi: int = 110) -> bytes:
    """A matplotlib figure as PNG bytes, for a ReportSection."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def parse_settings(family: Family, params: Mapping[str, Any], where: str) -> Any:
    try:
        return family.settings.model_validate(dict(params))
    except ValidationError as e:
        raise PolicyError(f"{where}: invalid {family.name} settings", problems=pydantic_problems(e)) from None
