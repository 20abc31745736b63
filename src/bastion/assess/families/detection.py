"""Detection: how well input detectors catch adversarial examples, naive attacks beside the adaptive one.

The detectors (``bastion.detectors``) are fitted on the clean rest of the test split (never on the assessed
inputs), with their thresholds at ``fpr``; each naive attack runs once on the assessed inputs the model classifies
correctly, and every detector is then judged on those examples *and* on a PGD that attacks model and detector
together (BPDA through feature squeezing). Rows: one per (detector, attack, mode) with ``detection_rate`` and
``evasion_rate``, plus one per detector on clean inputs with ``false_positive_rate``. The report never shows a
naive figure without the adaptive one beside it (Tramèr et al. 2020).
"""

from __future__ import annotations

import math
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
    figure_png,
)
from bastion.assess.metrics import Estimate, MetricInfo
from bastion.attacks import create_attack
from bastion.attacks.base import Attack
from bastion.defenses.preprocessing import MedianFilter, Squeezer
from bastion.detectors.base import FittedThreshold
from bastion.detectors.evaluation import DetectorRates, Rate, evaluate_detector, naive_examples
from bastion.detectors.input import FeatureSqueezing, Mahalanobis, Reconstruction
from bastion.detectors.input.squeeze import default_squeezers
from bastion.errors import BastionError
from bastion.models.base import Classifier
from bastion.types import Norm, ThreatModel

DetectorName = Literal["mahalanobis", "feature-squeezing", "reconstruction"]
ADAPTIVE = "detector-aware-pgd"
_ALL_DETECTORS: tuple[DetectorName, ...] = ("mahalanobis", "feature-squeezing", "reconstruction")


class NaiveAttack(FamilySettings):
    """An attack that ignores the detectors, at one budget."""

    attack: str
    norm: Literal["linf", "l2"] = "linf"
    eps: float = Field(gt=0)
    params: dict[str, Any] = Field(default_factory=dict)

    def build(self) -> Attack:
        return create_attack(self.attack, ThreatModel(Norm.parse(self.norm), self.eps), **self.params)


def _default_attacks() -> list[NaiveAttack]:
    return [
        NaiveAttack(attack="fgsm", eps=0.1),
        NaiveAttack(attack="pgd", eps=0.1),
        NaiveAttack(attack="cw", norm="l2", eps=2.0, params={"steps": 50, "binary_search_steps": 3}),
        NaiveAttack(attack="square", eps=0.1, params={"max_queries": 500}),
    ]


class DetectionSettings(FamilySettings):
    id: str | None = None
    detectors: list[DetectorName] = Field(default_factory=lambda: list(_ALL_DETECTORS), min_length=1)
    attacks: list[NaiveAttack] = Field(default_factory=_default_attacks, min_length=1)
    adaptive_norm: Literal["linf", "l2"] = "linf"
    adaptive_eps: float = Field(0.1, gt=0)
    adaptive_steps: int = Field(50, ge=1, le=10_000)
    fpr: float = Field(0.05, gt=0, lt=0.5)
    fit_samples: int = Field(5000, ge=50)
    bit_depth: int | None = Field(None, ge=1, le=8, description="squeezing; None: 4, or 2 for images under 16 px")
    median: int | None = Field(None, ge=0, description="median window (images); None or 0: no median filter")
    reconstruction_epochs: int = Field(20, ge=1)

    @field_validator("detectors")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("detectors must be distinct")
        return v

    @field_validator("attacks")
    @classmethod
    def _distinct_attacks(cls, v: list[NaiveAttack]) -> list[NaiveAttack]:
        names = [a.attack for a in v]
        if len(set(names)) != len(names):
            raise ValueError(f"each naive attack may appear once, got {names}")
        if ADAPTIVE in names:
            raise ValueError(f"{ADAPTIVE} is the adaptive attack every detector meets; it is not a naive one")
        return v


def _squeezers(settings: DetectionSettings, shape: tuple[int, ...]) -> tuple[Squeezer, ...]:
    median = settings.median or 0
    extra: tuple[Squeezer, ...] = (MedianFilter(median),) if median and len(shape) == 3 else ()
    return default_squeezers(shape, settings.bit_depth) + extra


def _build(name: str, model: Classifier, settings: DetectionSettings) -> FittedThreshold:
    if name == "mahalanobis":
        return Mahalanobis(fpr=settings.fpr, model=model)
    if name == "feature-squeezing":
        return FeatureSqueezing(fpr=settings.fpr, model=model, squeezers=_squeezers(settings, model.spec.input_shape))
    return Reconstruction(fpr=settings.fpr, bounds=model.spec.bounds, epochs=settings.reconstruction_epochs)


class DetectionFamily:
    """Detectors fitted on clean reference data, judged on naive and adaptive adversarial examples."""

    name: ClassVar[str] = "detection"
    settings: ClassVar[type[FamilySettings]] = DetectionSettings
    metrics: ClassVar[dict[str, MetricInfo]] = {
        "detection_rate": MetricInfo(
            "detection_rate", "fraction", "higher", "share of the adversarial examples that fool the model flagged"
        ),
        "evasion_rate": MetricInfo(
            "evasion_rate", "fraction", "lower", "share of attacked inputs that fool the model and pass the detector"
        ),
        "false_positive_rate": MetricInfo(
            "false_positive_rate", "fraction", "lower", "share of clean assessed inputs the detector flags"
        ),
    }

    def default_id(self, settings: DetectionSettings) -> str:
        return settings.id or "detection"

    def planned_rows(self, settings: DetectionSettings) -> list[dict[str, AtValue]]:
        rows: list[dict[str, AtValue]] = []
        for d in settings.detectors:
            rows.append({"detector": d, "attack": "none", "mode": "clean"})
            rows += [{"detector": d, "attack": a.attack, "mode": "naive"} for a in settings.attacks]
            rows.append({"detector": d, "attack": ADAPTIVE, "mode": "adaptive"})
        return rows

    def check_data(self, settings: DetectionSettings, data: AssessData) -> list[str]:
        return []

    def check(self, settings: DetectionSettings) -> list[str]:
        problems = []
        for a in settings.attacks:
            try:
                a.build()
            except BastionError as e:
                problems.append(f"{a.attack}: {e}")
        return problems

    def run(
        self,
        model: Classifier,
        data: AssessData,
        settings: DetectionSettings,
        *,
        entry: str,
        generator_for: GeneratorFor,
        progress: Progress,
    ) -> FamilyResult:
        t0 = time.perf_counter()
        planned = self.planned_rows(settings)
        ref_x, ref_y = data.reference_x, data.reference_y
        need = math.ceil(1 / settings.fpr) * 5
        if ref_x is None or ref_y is None or ref_x.shape[0] < need:
            have = 0 if ref_x is None else int(ref_x.shape[0])
            note = (
                f"not run: the detectors are fitted on the test split's inputs outside the assessed sample, and "
                f"{have} are left (need {need} at fpr {settings.fpr:g}): lower `samples`"
            )
            skipped = tuple(MetricRow(entry, at, {}, complete=False, note=note) for at in planned)
            return FamilyResult(self.name, entry, skipped, seconds=time.perf_counter() - t0)
        g = generator_for({"detector": "*", "attack": "*", "mode": "fit"})
        pick = torch.randperm(ref_x.shape[0], generator=g)[: settings.fit_samples]
        fit_x, fit_y = ref_x[pick], ref_y[pick]
        correct = data.correct
        x, y = data.x[correct], data.y[correct]
        if x.shape[0] == 0:  # nothing to attack: every rate would be 0 of 0, which must not read as a pass
            note = "not run: the model classifies none of the assessed inputs correctly, so there is nothing to attack"
            skipped = tuple(MetricRow(entry, at, {}, complete=False, note=note) for at in planned)
            return FamilyResult(self.name, entry, skipped, seconds=time.perf_counter() - t0)
        progress.task(entry, len(settings.attacks) + 2 * len(settings.detectors))
        naive = []
        for a in settings.attacks:
            naive += naive_examples(model, x, y, {a.attack: a.build()}, generator_for({"attack": a.attack}))
            progress.advance()
        threat = ThreatModel(Norm.parse(settings.adaptive_norm), settings.adaptive_eps)
        rows: list[MetricRow] = []
        outcomes: list[DetectorRates] = []
        for name in settings.detectors:
            try:
                detector = _build(name, model, settings).fit(fit_x, fit_y)
            except BastionError as e:
                note = f"not run: {e}"
                rows += [
                    MetricRow(entry, at, {}, complete=False, note=note) for at in planned if at["detector"] == name
                ]
                progress.advance(2)
                continue
            progress.advance()
            res = evaluate_detector(
                detector,
                model,
                x,
                y,
                naive,
                threat,
                adaptive_steps=settings.adaptive_steps,
                generator=generator_for({"detector": name, "attack": ADAPTIVE}),
            )
            progress.advance()
            outcomes.append(res)
            rows += self._rows(entry, res, data.confidence)
        order = {tuple(sorted(at.items())): i for i, at in enumerate(planned)}
        rows.sort(key=lambda r: order[tuple(sorted(r.at.items()))])
        return FamilyResult(self.name, entry, tuple(rows), payload=outcomes, seconds=time.perf_counter() - t0)

    @staticmethod
    def _rows(entry: str, res: DetectorRates, confidence: float) -> list[MetricRow]:
        d = res.detector
        rows = [
            MetricRow(
                entry,
                {"detector": d, "attack": "none", "mode": "clean"},
                {"false_positive_rate": Estimate.rate(res.clean_flagged, res.clean_n, confidence)},
            )
        ]

        def metrics(r: Rate) -> dict[str, Estimate]:
            return {
                "detection_rate": Estimate.rate(r.detected, r.fooled, confidence),
                "evasion_rate": Estimate.rate(r.evaded, r.attacked, confidence),
            }

        # a naive figure without its adaptive one is no verdict: a gate on it is inconclusive, never a pass
        alone = res.adaptive is None
        for r in res.naive:
            note = "" if r.fooled else "the attack fooled the model on no input: no detection rate"
            if alone:
                note = f"no verdict without the adaptive figure ({res.adaptive_note})"
            rows.append(
                MetricRow(
                    entry,
                    {"detector": d, "attack": r.attack, "mode": "naive"},
                    metrics(r),
                    complete=not alone,
                    note=note,
                )
            )
        at: dict[str, AtValue] = {"detector": d, "attack": ADAPTIVE, "mode": "adaptive"}
        if res.adaptive is None:
            rows.append(MetricRow(entry, at, {}, complete=False, note=res.adaptive_note))
        else:
            rows.append(MetricRow(entry, at, metrics(res.adaptive)))
        return rows

    def section(self, results: list[FamilyResult], class_names: tuple[str, ...]) -> ReportSection | None:
        head = ("entry", "detector", "clean FPR", "naive attacks: detected (evaded)", "adaptive: detected (evaded)")
        body = []
        bars: list[tuple[str, float, float]] = []
        for res in results:
            by: dict[str, dict[str, MetricRow]] = {}
            for r in res.rows:
                by.setdefault(str(r.at["detector"]), {})[f"{r.at['mode']}:{r.at['attack']}"] = r
            for det, rows in by.items():
                clean = rows.get("clean:none")
                fpr = str(clean.metrics["false_positive_rate"]) if clean and clean.metrics else "not run"
                naive_cells, best_naive = [], math.nan
                for key, r in rows.items():
                    if not key.startswith("naive:"):
                        continue
                    if not r.metrics or not r.metrics["detection_rate"].n:
                        naive_cells.append(f"{r.at['attack']}: {'not run' if not r.metrics else 'none fooled'}")
                        continue
                    dr, ev = r.metrics["detection_rate"], r.metrics["evasion_rate"]
                    naive_cells.append(f"{r.at['attack']}: {dr.value:.0%} ({ev.value:.0%})")
                    if r.at["attack"] == "pgd" or math.isnan(best_naive):
                        best_naive = dr.value
                adaptive = rows.get(f"adaptive:{ADAPTIVE}")
                if adaptive is not None and adaptive.metrics:
                    dr, ev = adaptive.metrics["detection_rate"], adaptive.metrics["evasion_rate"]
                    cell = f"{dr} ({ev.value:.0%} evaded)"
                    if not math.isnan(best_naive):
                        bars.append((det, best_naive, dr.value))
                else:
                    # never a naive figure alone: the missing adaptive figure is said, with why
                    cell = "NOT MEASURED: " + (adaptive.note if adaptive is not None else "no adaptive row")
                body.append((res.entry, det, fpr, "; ".join(naive_cells), cell))
        return ReportSection(
            id="detection",
            title="Input detectors: naive and adaptive attacks",
            intro="Each detector is fitted on clean inputs outside the assessed sample with its threshold at the "
            "policy's false-positive rate. 'Detected' is the share of adversarial examples that fool the model "
            "which the detector flags; 'evaded' the share of attacked inputs that fool the model and pass it. "
            "Naive attacks ignore the detector; the adaptive attack is PGD on the model and the detector together "
            "(BPDA through feature squeezing), as an attacker who knows the detector is there would run it "
            "(Tramèr et al. 2020). Judge a detector by its adaptive column.",
            tables=((head, tuple(body)),),
            figures=((_bars(bars), "Detection rate on PGD (naive) beside the adaptive attack, per detector."),)
            if bars
            else (),
        )


def _bars(bars: list[tuple[str, float, float]]) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 3.2))
    ax = fig.subplots()
    pos = range(len(bars))
    ax.bar([p - 0.2 for p in pos], [b[1] for b in bars], width=0.4, label="naive (PGD)")
    ax.bar([p + 0.2 for p in pos], [b[2] for b in bars], width=0.4, label="adaptive")
    ax.set_xticks(list(pos), [b[0] for b in bars])
    ax.set_ylabel("detection rate")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return figure_png(fig, dpi=110)


FAMILIES.add("detection", DetectionFamily())
