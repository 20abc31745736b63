"""Backdoor scan: does the model carry a trigger someone planted? (MITRE ATLAS AML.T0018)

Neural Cleanse (``bastion.defenses.backdoor_scan``) reverse-engineers, for every class, the smallest input patch
that sends clean inputs to it, from the assessed inputs alone (no training data). A class reachable by a much
smaller patch than the others is a backdoor's target. One row with the largest anomaly index and the number of
flagged classes; a policy gates on either (the paper flags an index above 2). The report shows every class's
reverse-engineered trigger, so a person can see whether the flagged one looks planted.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from pydantic import Field

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
    not_run,
)
from bastion.assess.metrics import Estimate, MetricInfo
from bastion.defenses.backdoor_scan import BackdoorScan, ScanSettings, neural_cleanse
from bastion.errors import BastionError
from bastion.models.base import Classifier

ATLAS = "AML.T0018"


class BackdoorSettings(FamilySettings):
    id: str | None = None
    steps: int = Field(400, ge=1, le=100_000)
    threshold: float = Field(2.0, gt=0)
    inputs: int = Field(1000, ge=2, description="clean inputs the triggers are optimised on")


class BackdoorFamily:
    """Neural Cleanse over every class; one row."""

    name: ClassVar[str] = "backdoor"
    settings: ClassVar[type[FamilySettings]] = BackdoorSettings
    metrics: ClassVar[dict[str, MetricInfo]] = {
        "max_anomaly_index": MetricInfo(
            "max_anomaly_index", "value", "lower", "how far the smallest trigger lies below the median (robust SDs)"
        ),
        "flagged_classes": MetricInfo(
            "flagged_classes", "value", "lower", "classes whose anomaly index is over the threshold"
        ),
    }

    def default_id(self, settings: BackdoorSettings) -> str:
        return settings.id or "backdoor-scan"

    def planned_rows(self, settings: BackdoorSettings) -> list[dict[str, AtValue]]:
        return [{"scan": "neural-cleanse"}]

    def check(self, settings: BackdoorSettings) -> list[str]:
        return []

    def needs_gradients(self, settings: BackdoorSettings) -> bool:
        return True

    def check_data(self, settings: BackdoorSettings, data: AssessData) -> list[str]:
        if data.x.dim() != 4:
            return [
                f"the backdoor scan needs image inputs (C, H, W); these inputs have shape {tuple(data.x.shape[1:])}"
            ]
        return []

    def run(
        self,
        model: Classifier,
        data: AssessData,
        settings: BackdoorSettings,
        *,
        entry: str,
        generator_for: GeneratorFor,
        progress: Progress,
    ) -> FamilyResult:
        import torch

        t0 = time.perf_counter()
        planned = self.planned_rows(settings)
        problems = self.check_data(settings, data)
        if problems:
            return not_run(self.name, entry, planned, problems[0], t0)
        x = data.x if data.reference_x is None else torch.cat([data.x, data.reference_x])
        x = x[: settings.inputs]
        try:
            scan = neural_cleanse(
                model,
                x,
                settings=ScanSettings(steps=settings.steps, threshold=settings.threshold),
                generator=generator_for(planned[0]),
                progress=progress,
            )
        except BastionError as e:
            return not_run(self.name, entry, planned, str(e), t0)
        row = MetricRow(
            entry,
            planned[0],
            {
                "max_anomaly_index": Estimate.exact(max(scan.anomaly)),
                "flagged_classes": Estimate.exact(float(len(scan.flagged))),
            },
            note=f"suspected target: {', '.join(map(str, scan.flagged))}" if scan.flagged else "",
        )
        missing = sum(1 for n in scan.norms if n == float("inf"))
        if missing * 2 > len(scan.norms):  # too few working triggers to compare: an index of 0 here proves nothing
            row = MetricRow(
                entry,
                row.at,
                row.metrics,
                complete=False,
                note=f"no working trigger found for {missing} of {len(scan.norms)} classes: raise steps",
            )
        return FamilyResult(self.name, entry, (row,), payload=scan, seconds=time.perf_counter() - t0)

    def section(self, results: list[FamilyResult], class_names: tuple[str, ...]) -> ReportSection | None:
        tables: list[Any] = []
        figures = []
        for res in results:
            scan = res.payload if isinstance(res.payload, BackdoorScan) else None
            if scan is None:
                tables.append((("entry", "note"), ((res.entry, res.rows[0].note),)))
                continue
            names = [class_names[i] if i < len(class_names) else str(i) for i in range(len(scan.norms))]
            body = tuple(
                (
                    res.entry,
                    names[i],
                    "none reached" if scan.norms[i] == float("inf") else f"{scan.norms[i]:.1f}",
                    f"{scan.success[i]:.3f}",
                    f"{scan.anomaly[i]:.2f}",
                    "flagged" if i in scan.flagged else "",
                )
                for i in range(len(scan.norms))
            )
            tables.append((("entry", "class", "trigger mask L1", "trigger success", "anomaly index", ""), body))
            figures.append(
                (_triggers(scan, names), f"{res.entry}: the smallest trigger found for each class (mask x pattern).")
            )
        intro = (
            "Neural Cleanse (Wang et al. 2019) searches, for every class, the smallest patch that sends clean inputs "
            "to it. A backdoor's target needs a much smaller patch than any other class: its anomaly index (how far "
            "its patch's size lies below the median, in robust standard deviations) is large; above 2 the class is "
            f"flagged. No training data is needed. MITRE ATLAS {ATLAS}."
        )
        return ReportSection(
            id="backdoor",
            title="Backdoor scan",
            intro=intro,
            tables=tuple(tables),
            figures=tuple(figures),
            data={"atlas": ATLAS},
        )


def _triggers(scan: BackdoorScan, names: list[str]) -> bytes:
    from matplotlib.figure import Figure

    k = len(names)
    fig = Figure(figsize=(1.2 * k, 1.5))
    axes = fig.subplots(1, k, squeeze=False)[0]
    shown: Any = (scan.masks * scan.patterns).clamp(0, 1)
    for i, ax in enumerate(axes):
        img = shown[i]
        ax.imshow(img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{names[i]}{' *' if i in scan.flagged else ''}"[:12], fontsize=7)
        ax.axis("off")
    return figure_png(fig)


FAMILIES.add("backdoor", BackdoorFamily())
