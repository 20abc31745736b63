"""Membership inference: does the model reveal which points it was trained on? (MITRE ATLAS AML.T0024.000)

Candidates are a seeded sample of the model's training data (members: the data the user or the model's card says it
was trained on) and as many points of the test split (non-members). Every attack asked for scores them; the attacks
that need reference models (LiRA, RMIA) share one set, trained with the model's recipe (from its card, or stated
in the policy) and cached. One row per attack with AUC, balanced accuracy and the TPR at 1% and 0.1% FPR; the
report plots the ROC curves on log axes, where the leak that matters (a few members identified with confidence)
shows.
"""

from __future__ import annotations

import math
import time
from typing import Any, ClassVar

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
from bastion.attacks.inference import MEMBERSHIP_ATTACKS, MembershipReport, Recipe, membership_inference
from bastion.attacks.inference.membership import DEFAULT_ATTACKS, MembershipResult
from bastion.errors import BastionError
from bastion.models.base import Classifier

ATLAS = "AML.T0024.000"


class RecipeSettings(FamilySettings):
    """The reference models' recipe when the model has no Bastion card (or to override it)."""

    architecture: str
    arch_params: dict[str, Any] = Field(default_factory=dict)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0, lt=10)
    weight_decay: float = Field(0.0, ge=0)


def recipe_for(given: RecipeSettings | None, card: Any) -> Recipe:
    """The policy's recipe when it states one, else the one the model's Bastion card records."""
    if given is not None:
        return Recipe(
            given.architecture, dict(given.arch_params), given.epochs, given.batch_size, given.lr, given.weight_decay
        )
    return Recipe.from_card(card)


class MembershipSettings(FamilySettings):
    id: str | None = None
    attacks: list[str] = Field(default_factory=lambda: list(DEFAULT_ATTACKS), min_length=1)
    reference_models: int = Field(16, ge=2, le=256, description="an even number: models come in pairs")
    candidates: int = Field(1000, ge=10, description="members and non-members each (at most what the data has)")
    recipe: RecipeSettings | None = None

    @field_validator("reference_models")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError(f"reference_models must be even (each pair splits the candidates in halves), got {v}")
        return v

    @field_validator("attacks")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [a for a in v if a not in MEMBERSHIP_ATTACKS]
        if unknown:
            raise ValueError(f"unknown attacks {unknown}; choose from {MEMBERSHIP_ATTACKS.names()}")
        if len(set(v)) != len(v):
            raise ValueError(f"attacks are listed twice: {v}")
        return v


def _tpr_estimate(tpr: float, members: int, confidence: float) -> Estimate:
    return Estimate.rate(round(tpr * members), members, confidence)


def _auc_estimate(auc: float, n_in: int, n_out: int, confidence: float) -> Estimate:
    """AUC with the Hanley & McNeil (1982) standard error as a normal interval."""
    from scipy.stats import norm

    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_in - 1) * (q1 - auc * auc) + (n_out - 1) * (q2 - auc * auc)) / (n_in * n_out)
    half = float(norm.ppf(0.5 + confidence / 2)) * math.sqrt(max(var, 0.0))
    return Estimate(auc, max(0.0, auc - half), min(1.0, auc + half))


class MembershipFamily:
    """Membership inference attacks on known members and non-members; one row per attack."""

    name: ClassVar[str] = "membership"
    settings: ClassVar[type[FamilySettings]] = MembershipSettings
    metrics: ClassVar[dict[str, MetricInfo]] = {
        "auc": MetricInfo("auc", "value", "lower", "ROC AUC of the attack's scores (0.5 is chance)"),
        "balanced_accuracy": MetricInfo(
            "balanced_accuracy", "value", "lower", "best threshold's (TPR + TNR) / 2 (0.5 is chance)"
        ),
        "tpr_at_1pct_fpr": MetricInfo(
            "tpr_at_1pct_fpr", "fraction", "lower", "share of members identified at 1% false positives"
        ),
        "tpr_at_01pct_fpr": MetricInfo(
            "tpr_at_01pct_fpr", "fraction", "lower", "share of members identified at 0.1% false positives"
        ),
    }

    def default_id(self, settings: MembershipSettings) -> str:
        return settings.id or "membership"

    def planned_rows(self, settings: MembershipSettings) -> list[dict[str, AtValue]]:
        return [{"attack": a} for a in settings.attacks]

    def check(self, settings: MembershipSettings) -> list[str]:
        if settings.recipe is not None:
            try:
                self._recipe(settings, None)
            except BastionError as e:
                return [str(e)]
        return []

    def check_data(self, settings: MembershipSettings, data: AssessData) -> list[str]:
        """What the run needs from the data: the model's training data, test data, and a recipe."""
        if data.training is None:
            return [
                "membership inference needs the data the model was trained on: pass --members train (the "
                "--data's train split; for your own data, an .npz with x_train/y_train beside x_test/y_test), or "
                "assess a Bastion model on the dataset its card names"
            ]
        if self._non_members(data)[0].shape[0] < 10:
            return ["membership inference needs at least 10 test inputs as non-members"]
        needs_refs = any(MEMBERSHIP_ATTACKS.get(a).references for a in settings.attacks)
        if needs_refs and settings.recipe is None and data.training.card is None:
            return [
                "LiRA and RMIA train reference models with the model's recipe: this model has no Bastion card, so "
                "give the policy entry a `recipe` (architecture from the zoo, epochs, batch_size, lr)"
            ]
        return []

    @staticmethod
    def _recipe(settings: MembershipSettings, card: Any) -> Recipe:
        return recipe_for(settings.recipe, card)

    @staticmethod
    def _non_members(data: AssessData) -> tuple[torch.Tensor, torch.Tensor]:
        if data.reference_x is None or data.reference_y is None:
            return data.x, data.y
        return torch.cat([data.x, data.reference_x]), torch.cat([data.y, data.reference_y])

    def run(
        self,
        model: Classifier,
        data: AssessData,
        settings: MembershipSettings,
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
        assert data.training is not None
        xo, yo = self._non_members(data)
        xi, yi = data.training.x, data.training.y
        n = min(settings.candidates, int(xi.shape[0]), int(xo.shape[0]))
        g = generator_for({"attack": "*"})
        pick_in = torch.randperm(int(xi.shape[0]), generator=g)[:n]
        pick_out = torch.randperm(int(xo.shape[0]), generator=g)[:n]
        needs_refs = any(MEMBERSHIP_ATTACKS.get(a).references for a in settings.attacks)
        recipe = self._recipe(settings, data.training.card) if needs_refs else None
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
        try:
            report = membership_inference(
                model,
                (xi[pick_in], yi[pick_in]),
                (xo[pick_out], yo[pick_out]),
                attacks=settings.attacks,
                recipe=recipe,
                reference_models=settings.reference_models,
                seed=seed,
                progress=progress,
            )
        except BastionError as e:
            return not_run(self.name, entry, planned, str(e), t0)
        rows = degraded(model, tuple(self._row(entry, r, data.confidence) for r in report.results))
        return FamilyResult(self.name, entry, rows, payload=report, seconds=time.perf_counter() - t0)

    @staticmethod
    def _row(entry: str, r: MembershipResult, confidence: float) -> MetricRow:
        return MetricRow(
            entry,
            {"attack": r.attack},
            {
                "auc": _auc_estimate(r.auc, r.members, r.non_members, confidence),
                "balanced_accuracy": Estimate.exact(r.balanced_accuracy),
                "tpr_at_1pct_fpr": _tpr_estimate(r.tpr_at_1pct_fpr, r.members, confidence),
                "tpr_at_01pct_fpr": _tpr_estimate(r.tpr_at_01pct_fpr, r.members, confidence),
            },
        )

    def section(self, results: list[FamilyResult], class_names: tuple[str, ...]) -> ReportSection | None:
        head = ("entry", "attack", "AUC [95% CI]", "balanced acc.", "TPR @ 1% FPR", "TPR @ 0.1% FPR", "note")
        body = []
        curves: list[tuple[str, MembershipResult]] = []
        costs = []
        for res in results:
            rep = res.payload if isinstance(res.payload, MembershipReport) else None
            for row in res.rows:
                if not row.metrics:
                    body.append((res.entry, str(row.at["attack"]), "not run", "", "", "", row.note))
                    continue
                m = row.metrics
                auc = m["auc"]
                body.append(
                    (
                        res.entry,
                        str(row.at["attack"]),
                        f"{auc.value:.3f} [{auc.low:.3f}, {auc.high:.3f}]",
                        f"{m['balanced_accuracy'].value:.3f}",
                        str(m["tpr_at_1pct_fpr"]),
                        str(m["tpr_at_01pct_fpr"]),
                        "",
                    )
                )
            if rep is not None:
                curves += [(f"{res.entry}: {r.attack}", r) for r in rep.results]
                if rep.reference_models:
                    how = (
                        "reused from the cache" if rep.reference_cached else f"trained in {rep.reference_seconds:.1f} s"
                    )
                    costs.append(
                        f"{res.entry}: {rep.members} members and {rep.non_members} non-members; "
                        f"{rep.reference_models} reference models ({rep.recipe.get('architecture')}, "
                        f"{rep.recipe.get('epochs')} epochs) {how} on {rep.reference_threads} threads"
                    )
        intro = (
            "Can an attacker tell the model's training points from points it never saw? AUC 0.5 and a TPR equal to "
            "the FPR are chance. The TPR at a low false-positive rate is the figure that matters: it is the share "
            "of members an attacker identifies with confidence (Carlini et al. 2022). LiRA and RMIA calibrate each "
            "point against reference models trained with the model's recipe, with (online) and without (offline) "
            f"that point. MITRE ATLAS {ATLAS}. " + " ".join(costs)
        )
        return ReportSection(
            id="membership",
            title="Membership inference",
            intro=intro,
            tables=((head, tuple(body)),),
            figures=((_roc_plot(curves), "ROC curves on log axes; the dashed line is chance."),) if curves else (),
            data={"atlas": ATLAS},
        )


def _roc_plot(curves: list[tuple[str, MembershipResult]]) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2, 4.4))
    ax = fig.subplots()
    floor = 1e-4
    for label, r in curves:
        fpr = [max(v, floor) for v in r.roc[0]]
        tpr = [max(v, floor) for v in r.roc[1]]
        ax.plot(fpr, tpr, label=f"{label} (TPR@0.1% {r.tpr_at_01pct_fpr:.3f})")
    ax.plot([floor, 1], [floor, 1], "k--", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(floor, 1)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return figure_png(fig, dpi=110)


FAMILIES.add("membership", MembershipFamily())
