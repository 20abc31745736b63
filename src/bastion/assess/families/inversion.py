"""Model inversion: can an attacker recover what each class looks like? (MITRE ATLAS AML.T0024.001)

The test split outside the assessed sample is split in two halves the model never trained on: the attacker's public
auxiliary data (its generative prior, unless ``prior: none``) and the training data of an independent judge
classifier. Each method (white-box, black-box on scores only) reconstructs ``restarts`` images per class; the judge's
agreement with the intended class says how recognisable they are, and their correlation with the nearest real image
of the class how close to real data. The report shows the grid of reconstructions per class.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator

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
from bastion.attacks.extraction import SubstituteRecipe, Targets, train_substitute
from bastion.attacks.inference.inversion import (
    InversionResult,
    InversionSettings,
    invert,
    judge_agreement,
    nearest_similarity,
)
from bastion.errors import BastionError
from bastion.models.base import Classifier

ATLAS = "AML.T0024.001"
MethodName = Literal["white-box", "black-box"]
_BOTH: tuple[MethodName, ...] = ("white-box", "black-box")


class InversionFamilySettings(FamilySettings):
    id: str | None = None
    methods: list[MethodName] = Field(default_factory=lambda: list(_BOTH), min_length=1)
    prior: Literal["generative", "none"] = "generative"
    steps: int = Field(300, ge=1, le=100_000)
    black_box_steps: int = Field(200, ge=1, le=100_000)
    restarts: int = Field(4, ge=1, le=64)
    judge_epochs: int = Field(8, ge=1, le=1000)

    @field_validator("methods")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"methods are listed twice: {v}")
        return v


class InversionFamily:
    """Class-representative inversion, white-box and black-box, judged by an independent classifier."""

    name: ClassVar[str] = "inversion"
    settings: ClassVar[type[FamilySettings]] = InversionFamilySettings
    metrics: ClassVar[dict[str, MetricInfo]] = {
        "judge_agreement": MetricInfo(
            "judge_agreement", "fraction", "lower", "share of reconstructions an independent judge names as their class"
        ),
        "nearest_similarity": MetricInfo(
            "nearest_similarity",
            "value",
            "lower",
            "mean correlation of a reconstruction with the closest real input of its class",
        ),
        "queries_per_class": MetricInfo("queries_per_class", "value", "higher", "model queries per class"),
    }

    def default_id(self, settings: InversionFamilySettings) -> str:
        return settings.id or "inversion"

    def planned_rows(self, settings: InversionFamilySettings) -> list[dict[str, AtValue]]:
        return [{"method": m} for m in settings.methods]

    def check(self, settings: InversionFamilySettings) -> list[str]:
        return []

    def needs_gradients(self, settings: InversionFamilySettings) -> bool:
        return "white-box" in settings.methods

    def check_data(self, settings: InversionFamilySettings, data: AssessData) -> list[str]:
        have = 0 if data.reference_x is None else int(data.reference_x.shape[0])
        if have < 40:
            return [
                f"inversion splits the test split outside the assessed sample into the attacker's public data and "
                f"the judge's training data; {have} inputs are left (need 40): lower `samples`"
            ]
        return []

    def run(
        self,
        model: Classifier,
        data: AssessData,
        settings: InversionFamilySettings,
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
        assert data.reference_x is not None and data.reference_y is not None
        g = generator_for({"method": "*"})
        order = torch.randperm(int(data.reference_x.shape[0]), generator=g)
        half = order.shape[0] // 2
        aux, judged = order[:half], order[half:]
        judge = train_substitute(
            model.spec,
            data.reference_x[judged],
            Targets(data.reference_y[judged], None, False),
            SubstituteRecipe(epochs=settings.judge_epochs),
            seed=int(torch.randint(0, 2**31 - 1, (1,), generator=g)),
        )
        real_x, real_y, real_from = (
            (data.training.x, data.training.y, "the model's training data")
            if data.training is not None
            else (
                data.reference_x[judged],
                data.reference_y[judged],
                "the judge's data (the training data is not known)",
            )
        )
        rows: list[MetricRow] = []
        results: list[InversionResult] = []
        for at in planned:
            method = str(at["method"])
            s = InversionSettings(
                steps=settings.steps if method == "white-box" else settings.black_box_steps, restarts=settings.restarts
            )
            try:
                r = invert(
                    model,
                    method=method,  # type: ignore[arg-type]
                    settings=s,
                    generator=generator_for(at),
                    aux=data.reference_x[aux] if settings.prior == "generative" else None,
                    progress=progress,
                )
            except BastionError as e:
                rows.append(MetricRow(entry, at, {}, complete=False, note=f"not run: {e}"))
                continue
            agree, _ = judge_agreement(judge, r)
            total = len(r.classes) * settings.restarts
            sim = nearest_similarity(r, real_x, real_y)
            rows.append(
                MetricRow(
                    entry,
                    at,
                    {
                        "judge_agreement": Estimate.rate(round(agree * total), total, data.confidence),
                        "nearest_similarity": Estimate.exact(float(sim.nanmean())),
                        "queries_per_class": Estimate.exact(r.queries / len(r.classes)),
                    },
                )
            )
            results.append(r)
        payload = {"results": results, "similar_to": real_from}
        return FamilyResult(
            self.name, entry, degraded(model, tuple(rows)), payload=payload, seconds=time.perf_counter() - t0
        )

    def section(self, results: list[FamilyResult], class_names: tuple[str, ...]) -> ReportSection | None:
        head = (
            "entry",
            "method",
            "judge agreement [95% CI]",
            "similarity to nearest real",
            "s / class",
            "queries / class",
            "note",
        )
        body = []
        figures = []
        notes = []
        for res in results:
            payload_of: dict[str, Any] = res.payload if isinstance(res.payload, dict) else {}
            seconds = {
                r.method.split(" ")[0]: f"{r.seconds_per_class:.2f}" for r in payload_of.get("results", [])
            }  # timings are shown, not gated: they are not reproducible
            for row in res.rows:
                if not row.metrics:
                    body.append((res.entry, str(row.at["method"]), "not run", "", "", "", row.note))
                    continue
                m = row.metrics
                body.append(
                    (
                        res.entry,
                        str(row.at["method"]),
                        str(m["judge_agreement"]),
                        f"{m['nearest_similarity'].value:.3f}",
                        seconds.get(str(row.at["method"]), ""),
                        f"{m['queries_per_class'].value:.0f}",
                        "",
                    )
                )
            payload: dict[str, Any] = res.payload if isinstance(res.payload, dict) else {}
            for r in payload.get("results", []):
                figures.append((_grid(r, class_names), f"{res.entry}: {r.method} reconstructions, one row per class."))
            if payload:
                notes.append(f"{res.entry}: similarity measured against {payload['similar_to']}.")
        return ReportSection(
            id="inversion",
            title="Model inversion",
            intro=(
                "What an attacker recovers of each class from the model alone: images optimised until the model is "
                "sure of a class, under image priors (total variation, jitter) and, by default, a generative prior "
                "fitted on public data of the same kind. An independent judge classifier, trained on data neither "
                "the model nor the attacker's prior used, names the class of each reconstruction: high agreement "
                f"means the model gives away what its classes look like. MITRE ATLAS {ATLAS}. " + " ".join(notes)
            ),
            tables=((head, tuple(body)),),
            figures=tuple(figures),
            data={"atlas": ATLAS},
        )


def _grid(r: InversionResult, class_names: tuple[str, ...]) -> bytes:
    from matplotlib.figure import Figure

    c, k = r.images.shape[:2]
    image = r.images.dim() == 5
    fig = Figure(figsize=(1.1 * k + 1.2, 1.0 * c + 0.3))
    axes = fig.subplots(c, k, squeeze=False)
    for i in range(c):
        for j in range(k):
            ax = axes[i][j]
            x = r.images[i, j]
            if image:
                ax.imshow(x.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray" if x.shape[0] == 1 else None)
            else:
                ax.bar(range(x.numel()), x.flatten().numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                cls = r.classes[i]
                ax.set_ylabel(class_names[cls] if cls < len(class_names) else str(cls), fontsize=7)
    return figure_png(fig, dpi=90)


FAMILIES.add("inversion", InversionFamily())
