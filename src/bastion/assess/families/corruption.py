"""Common corruptions: accuracy under Gaussian noise, Gaussian blur and lowered contrast at five severities.

Not an attack but the smallest complete family, and useful on its own: a model that is brittle under ordinary
corruptions will be brittle in production. After Hendrycks & Dietterich, "Benchmarking Neural Network Robustness
to Common Corruptions and Perturbations", ICLR 2019 (severity parameters of their CIFAR-10-C, scaled to the
model's value range).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor

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
    figure_png,
)
from bastion.assess.metrics import Estimate, MetricInfo
from bastion.models.base import Classifier, predict_labels
from bastion.types import Bounds

CorruptionName = Literal["gaussian_noise", "gaussian_blur", "contrast"]
SEVERITY = {  # Hendrycks & Dietterich's CIFAR-10-C parameters, severities 1..5
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # noise std, as a fraction of the value range
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),  # blur std in pixels
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # factor towards each image's mean
}


def gaussian_noise(x: Tensor, level: float, bounds: Bounds, generator: torch.Generator) -> Tensor:
    lo, hi = bounds
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + noise * level * (hi - lo)).clamp(lo, hi)  # the corruption saturates like a sensor


def gaussian_blur(x: Tensor, level: float, bounds: Bounds, generator: torch.Generator) -> Tensor:
    radius = max(1, math.ceil(3 * level))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * level**2))
    k = k / k.sum()
    c = x.shape[1]
    padded = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(padded, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)  # separable: rows, then columns
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def contrast(x: Tensor, level: float, bounds: Bounds, generator: torch.Generator) -> Tensor:
    mean = x.flatten(1).mean(1).view(-1, *([1] * (x.dim() - 1)))
    return (x - mean) * level + mean


CORRUPTIONS: dict[str, Callable[[Tensor, float, Bounds, torch.Generator], Tensor]] = {
    "gaussian_noise": gaussian_noise,
    "gaussian_blur": gaussian_blur,
    "contrast": contrast,
}


_ALL: tuple[CorruptionName, ...] = ("gaussian_noise", "gaussian_blur", "contrast")


class CorruptionSettings(FamilySettings):
    id: str | None = None
    corruptions: list[CorruptionName] = Field(default_factory=lambda: list(_ALL))
    severities: list[int] = Field(default_factory=lambda: [1, 3, 5])

    @field_validator("severities")
    @classmethod
    def _severities(cls, v: list[int]) -> list[int]:
        if not v or any(s < 1 or s > 5 for s in v) or len(set(v)) != len(v):
            raise ValueError(f"severities must be distinct integers from 1 to 5, got {v}")
        return sorted(v)


class CorruptionFamily:
    """Accuracy on corrupted copies of the assessed inputs; one row per (corruption, severity)."""

    name: ClassVar[str] = "corruption"
    settings: ClassVar[type[FamilySettings]] = CorruptionSettings
    metrics: ClassVar[dict[str, MetricInfo]] = {
        "accuracy": MetricInfo("accuracy", "fraction", "higher", "share of corrupted inputs classified correctly"),
        "flip_rate": MetricInfo(
            "flip_rate", "fraction", "lower", "share of clean-correct inputs whose label the corruption changed"
        ),
    }

    def default_id(self, settings: CorruptionSettings) -> str:
        return settings.id or "corruption"

    def planned_rows(self, settings: CorruptionSettings) -> list[dict[str, AtValue]]:
        return [{"corruption": c, "severity": float(s)} for c in settings.corruptions for s in settings.severities]

    def check_data(self, settings: CorruptionSettings, data: AssessData) -> list[str]:
        return []

    def check(self, settings: CorruptionSettings) -> list[str]:
        return []

    def run(
        self,
        model: Classifier,
        data: AssessData,
        settings: CorruptionSettings,
        *,
        entry: str,
        generator_for: GeneratorFor,
        progress: Progress,
    ) -> FamilyResult:
        t0 = time.perf_counter()
        image = len(model.spec.input_shape) == 3
        rows = []
        correct = data.correct
        planned = self.planned_rows(settings)
        progress.task(f"{entry}", len(planned))
        for at in planned:
            name, sev = str(at["corruption"]), int(at["severity"])
            if name == "gaussian_blur" and not image:
                rows.append(
                    MetricRow(
                        entry,
                        at,
                        {},
                        complete=False,
                        note=f"blur needs (C, H, W) images; this model's input is {model.spec.input_shape}",
                    )
                )
                progress.advance()
                continue
            level = SEVERITY[name][sev - 1]
            xc = CORRUPTIONS[name](data.x, level, model.spec.bounds, generator_for(at))
            pred = predict_labels(model, xc, batch_size=data.batch_size)
            right = pred == data.y
            flipped = int((correct & ~right).sum())
            rows.append(
                MetricRow(
                    entry,
                    at,
                    {
                        "accuracy": Estimate.rate(int(right.sum()), data.n, data.confidence),
                        "flip_rate": Estimate.rate(flipped, int(correct.sum()), data.confidence),
                    },
                )
            )
            progress.advance()
        return FamilyResult(self.name, entry, tuple(rows), seconds=time.perf_counter() - t0)

    def section(self, results: list[FamilyResult], class_names: tuple[str, ...]) -> ReportSection | None:
        head = ("entry", "corruption", "severity", "accuracy [95% CI]", "flip rate")
        body = []
        series: dict[str, list[tuple[float, float]]] = {}
        for res in results:
            for r in res.rows:
                if not r.metrics:
                    body.append((res.entry, str(r.at["corruption"]), f"{r.at['severity']:g}", "not run", r.note))
                    continue
                acc, flip = r.metrics["accuracy"], r.metrics["flip_rate"]
                body.append(
                    (res.entry, str(r.at["corruption"]), f"{r.at['severity']:g}", str(acc), f"{flip.value:.1%}")
                )
                series.setdefault(f"{res.entry}: {r.at['corruption']}", []).append((float(r.at["severity"]), acc.value))
        return ReportSection(
            id="corruption",
            title="Common corruptions",
            intro="Accuracy on copies of the assessed inputs with Gaussian noise, Gaussian blur or lowered contrast "
            "at increasing severity (Hendrycks & Dietterich 2019). A steep fall means the model is brittle to "
            "ordinary changes in its input, before any attacker is involved.",
            tables=((head, tuple(body)),),
            figures=((_curves(series), "Accuracy against corruption severity."),) if series else (),
        )


def _curves(series: dict[str, list[tuple[float, float]]]) -> bytes:

    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 3.4))
    ax = fig.subplots()
    for label, pts in series.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xticks(sorted({p[0] for pts in series.values() for p in pts}))
    ax.set_xlabel("severity")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure_png(fig, dpi=110)


FAMILIES.add("corruption", CorruptionFamily())
