"""Model extraction: how good a copy of the model does a query budget buy? (MITRE ATLAS AML.T0024.002)

The attacker's unlabelled pool is the test split outside the assessed sample (natural data the model never trained
on); the copy is judged on the assessed inputs: fidelity (agreement with the model's own labels) and accuracy.
Against an endpoint (``assess --url``) it uses whatever the endpoint releases, so a gateway's output policy shows in
the figures. One row per checkpoint (``{queries: N}``); the report plots fidelity against queries.
"""

from __future__ import annotations

import time
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from bastion._progress import Progress
from bastion.assess.families.base import (
    FAMILIES,
    AssessData,
    AtValue,
    FamilyResult,
    FamilySettings,
    GeneratorFor,
    MetricRow,
    ReportSection,
    degraded,
    figure_png,
    not_run,
)
from bastion.assess.metrics import Estimate, MetricInfo
from bastion.attacks.extraction import (
    EXTRACTION_STRATEGIES,
    ExtractionResult,
    Knowledge,
    SubstituteRecipe,
    default_checkpoints,
    extract,
)
from bastion.errors import BastionError
from bastion.models.base import Classifier

ATLAS = "AML.T0024.002"


class ExtractionSettings(FamilySettings):
    id: str | None = None
    strategy: str = "knockoff-random"
    budget: int = Field(2000, ge=1, description="queries to the model (each repeat counts)")
    checkpoints: list[int] | None = None
    release: Literal["auto", "logits", "scores", "labels"] = "auto"
    repeats: int = Field(1, ge=1, le=64, description="ask each input this many times and average (against noise)")
    architecture: str | None = None
    epochs: int = Field(30, ge=1, le=1000)

    @model_validator(mode="after")
    def _fits(self) -> ExtractionSettings:
        if self.strategy not in EXTRACTION_STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose from {EXTRACTION_STRATEGIES.names()}")
        if self.budget < self.repeats:
            raise ValueError(f"budget {self.budget} is less than one input asked {self.repeats} times")
        if self.checkpoints is not None:
            bad = [c for c in self.checkpoints if not self.repeats <= c <= self.budget]
            if bad or not self.checkpoints or len(set(self.checkpoints)) != len(self.checkpoints):
                raise ValueError(
                    f"checkpoints must be distinct and within [{self.repeats}, {self.budget}], got {self.checkpoints}"
                )
        return self

    def points(self) -> list[int]:
        return sorted(self.checkpoints) if self.checkpoints else default_checkpoints(self.budget)


class ExtractionFamily:
    """A substitute trained on the model's answers, measured at each checkpoint of the query budget."""

    name: ClassVar[str] = "extraction"
    settings: ClassVar[type[FamilySettings]] = ExtractionSettings
    metrics: ClassVar[dict[str, MetricInfo]] = {
        "fidelity": MetricInfo("fidelity", "fraction", "lower", "share of inputs where the copy agrees with the model"),
        "accuracy": MetricInfo("accuracy", "fraction", "lower", "the copy's accuracy on the assessed inputs"),
    }

    def default_id(self, settings: ExtractionSettings) -> str:
        return settings.id or "extraction"

    def planned_rows(self, settings: ExtractionSettings) -> list[dict[str, AtValue]]:
        return [{"queries": float(q)} for q in settings.points()]

    def check(self, settings: ExtractionSettings) -> list[str]:
        try:
            SubstituteRecipe(architecture=settings.architecture, epochs=settings.epochs)
        except BastionError as e:
            return [str(e)]
        return []

    def check_data(self, settings: ExtractionSettings, data: AssessData) -> list[str]:
        pool = 0 if data.reference_x is None else int(data.reference_x.shape[0])
        need = EXTRACTION_STRATEGIES.get(settings.strategy).pool_needed(settings.budget // settings.repeats)
        if pool < need:
            return [
                f"the attacker's pool is the test split outside the assessed sample: {pool} inputs, and {settings.strategy} "
                f"needs {need} for a budget of {settings.budget}; lower the budget or `samples`"
            ]
        return []

    def run(
        self,
        model: Classifier,
        data: AssessData,
        settings: ExtractionSettings,
        *,
        entry: str,
        generator_for: GeneratorFor,
        progress: Progress,
    ) -> FamilyResult:
        t0 = time.perf_counter()
        planned = self.planned_rows(settings)
        problems = self.check_data(settings, data)
        if problems:
            return not_run(self.name, entry, planned, problems[0], t0)
        assert data.reference_x is not None
        g = generator_for({"queries": "*"})
        seed = int(g.initial_seed() % (2**31 - 1))
        try:
            result = extract(
                model,
                data.reference_x,
                budget=settings.budget,
                strategy=settings.strategy,
                checkpoints=settings.points(),
                knowledge=Knowledge(kind=settings.release, repeats=settings.repeats),
                recipe=SubstituteRecipe(architecture=settings.architecture, epochs=settings.epochs),
                eval_x=data.x,
                eval_y=data.y,
                reference=data.clean_pred,  # the model's labels on the assessed inputs: no extra queries
                seed=seed,
                progress=progress,
            )
        except BastionError as e:
            return not_run(self.name, entry, planned, str(e), t0)
        n = data.n
        rows = tuple(
            MetricRow(
                entry,
                at,
                {
                    "fidelity": Estimate.rate(round(p.fidelity * n), n, data.confidence),
                    "accuracy": Estimate.rate(round((p.accuracy or 0.0) * n), n, data.confidence),
                },
            )
            for at, p in zip(planned, result.curve, strict=True)
        )
        return FamilyResult(self.name, entry, degraded(model, rows), payload=result, seconds=time.perf_counter() - t0)

    def section(self, results: list[FamilyResult], class_names: tuple[str, ...]) -> ReportSection | None:
        head = ("entry", "queries", "fidelity [95% CI]", "copy's accuracy", "note")
        body = []
        curves: list[tuple[str, ExtractionResult]] = []
        notes = []
        for res in results:
            r = res.payload if isinstance(res.payload, ExtractionResult) else None
            for row in res.rows:
                q = f"{row.at['queries']:g}"
                if not row.metrics:
                    body.append((res.entry, q, "not run", "", row.note))
                    continue
                body.append((res.entry, q, str(row.metrics["fidelity"]), str(row.metrics["accuracy"]), ""))
            if r is not None:
                curves.append((res.entry, r))
                notes.append(
                    f"{res.entry}: {r.strategy}, answers used as {r.release}, {r.victim_queries} queries sent."
                )
        return ReportSection(
            id="extraction",
            title="Model extraction",
            intro=(
                "How good a copy of the model an attacker gets for a number of queries: a substitute trained on the "
                "model's answers to natural inputs (the test split outside the assessed sample), judged on the "
                "assessed inputs. High fidelity with few queries means the API gives the model away; fewer released "
                f"details (rounding, top-1, labels only) slow the curve down. MITRE ATLAS {ATLAS}. " + " ".join(notes)
            ),
            tables=((head, tuple(body)),),
            figures=((_curve_plot(curves), "Fidelity of the copy against queries."),) if curves else (),
            data={"atlas": ATLAS},
        )


def _curve_plot(curves: list[tuple[str, ExtractionResult]]) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 3.4))
    ax = fig.subplots()
    for label, r in curves:
        ax.plot([p.queries for p in r.curve], [p.fidelity for p in r.curve], marker="o", label=f"{label} ({r.release})")
    ax.set_xscale("log")
    ax.set_xlabel("queries to the model")
    ax.set_ylabel("fidelity of the copy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return figure_png(fig, dpi=110)


FAMILIES.add("extraction", ExtractionFamily())
