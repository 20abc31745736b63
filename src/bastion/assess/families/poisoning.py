"""Data poisoning: how much does a poisoned share of the training set buy an attacker? (MITRE ATLAS AML.T0020,
leading to AML.T0018 for backdoors)

The family needs the model's training data and recipe (as membership inference does: ``--members train`` or the
model's card; a policy ``recipe`` for a model from elsewhere). For each rate it poisons a copy of the training data
with the chosen attack, trains the recipe on it and measures the poisoned model on the assessed test inputs: its
clean accuracy, the drop against the assessed model, and the attack success rate (triggered inputs of other
classes answered as the target; targeted label flipping: source inputs answered as the target) beside the
assessed model's own rate on the same inputs. One row per rate.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
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
    not_run,
)
from bastion.assess.families.membership import RecipeSettings, recipe_for
from bastion.assess.metrics import Estimate, MetricInfo
from bastion.attacks.poisoning import (
    AdaptiveBlend,
    BadNets,
    Blended,
    BlendTrigger,
    CleanLabel,
    LabelFlip,
    PatchTrigger,
    PoisoningResult,
    poisoning_attack,
)
from bastion.errors import BastionError
from bastion.models.base import Classifier

ATLAS = "AML.T0020"


class TriggerSettings(FamilySettings):
    size: int = Field(3, ge=1)
    location: str = "bottom-right"
    pattern: str | None = None
    alpha: float = Field(0.15, gt=0, lt=1)
    seed: int = 0


class PoisoningSettings(FamilySettings):
    id: str | None = None
    attack: Literal["badnets", "blended", "adaptive-blend", "clean-label", "label-flip"] = "badnets"
    rates: list[float] = Field(default_factory=lambda: [0.01, 0.05], min_length=1)
    target: int = Field(0, ge=0)
    source: int | None = Field(None, ge=0, description="label-flip: the class whose labels move (targeted)")
    trigger: TriggerSettings = Field(default_factory=TriggerSettings)
    eps: float = Field(0.15, gt=0, description="clean-label: the Linf budget of the hardening perturbation")
    recipe: RecipeSettings | None = None

    @field_validator("rates")
    @classmethod
    def _rates(cls, v: list[float]) -> list[float]:
        bad = [r for r in v if not 0 < r < 1]
        if bad:
            raise ValueError(f"poisoning rates are shares of the training set in (0, 1), e.g. 0.05; got {bad}")
        if len(set(v)) != len(v):
            raise ValueError(f"rates are listed twice: {v}")
        return v


def build_attack(s: PoisoningSettings) -> Any:
    """The attack object the settings describe."""
    if s.attack == "badnets":
        return BadNets(
            s.target,
            PatchTrigger(s.trigger.size, s.trigger.location, s.trigger.pattern or "checkerboard", seed=s.trigger.seed),
        )
    if s.attack == "clean-label":
        trig = PatchTrigger(
            s.trigger.size, s.trigger.location, s.trigger.pattern or "checkerboard", seed=s.trigger.seed
        )
        return CleanLabel(s.target, trig, eps=s.eps)
    if s.attack == "adaptive-blend":
        return AdaptiveBlend(s.target, alpha=s.trigger.alpha, pattern=s.trigger.pattern or "noise", seed=s.trigger.seed)
    if s.attack == "blended":
        return Blended(s.target, BlendTrigger(s.trigger.alpha, s.trigger.pattern or "noise", s.trigger.seed))
    if s.source is None:
        return LabelFlip("random")
    return LabelFlip("targeted", s.source, s.target)


class PoisoningFamily:
    """Poison the training data at each rate, train the recipe, measure accuracy and attack success."""

    name: ClassVar[str] = "poisoning"
    settings: ClassVar[type[FamilySettings]] = PoisoningSettings
    metrics: ClassVar[dict[str, MetricInfo]] = {
        "attack_success_rate": MetricInfo(
            "attack_success_rate",
            "fraction",
            "lower",
            "share of triggered inputs the poisoned model answers as the target",
        ),
        "clean_accuracy": MetricInfo(
            "clean_accuracy", "fraction", "higher", "the poisoned model's accuracy on clean inputs"
        ),
        "accuracy_drop": MetricInfo(
            "accuracy_drop", "value", "lower", "the assessed model's clean accuracy minus the poisoned model's"
        ),
    }

    def default_id(self, settings: PoisoningSettings) -> str:
        return settings.id or f"poisoning-{settings.attack}"

    def planned_rows(self, settings: PoisoningSettings) -> list[dict[str, AtValue]]:
        return [{"rate": r} for r in settings.rates]

    def check(self, settings: PoisoningSettings) -> list[str]:
        if settings.attack == "label-flip" and settings.source is not None and settings.source == settings.target:
            return [f"label-flip source and target must differ, both are {settings.source}"]
        return []

    def check_data(self, settings: PoisoningSettings, data: AssessData) -> list[str]:
        if data.training is None:
            return [
                "a poisoning assessment trains on poisoned copies of the model's training data: pass --members train "
                "(the --data's train split; for your own data, an .npz with x_train/y_train beside x_test/y_test)"
            ]
        if settings.recipe is None and data.training.card is None:
            return [
                "a poisoning assessment trains with the model's recipe: this model has no Bastion card, so give the "
                "policy entry a `recipe` (architecture from the zoo, epochs, batch_size, lr)"
            ]
        from bastion.types import ModelSpec

        card = data.training.card
        classes = (
            card.spec.num_classes if card is not None else int(max(int(data.y.max()), int(data.training.y.max()))) + 1
        )
        spec = ModelSpec(input_shape=tuple(data.x.shape[1:]), num_classes=classes, bounds=(0.0, 1.0))
        problems = build_attack(settings).problems(spec)
        n = int(data.training.y.shape[0])
        for r in settings.rates:
            if round(r * n) < 1:
                problems.append(f"rate {r} poisons no sample of the {n} training samples: raise it")
        return problems

    def run(
        self,
        model: Classifier,
        data: AssessData,
        settings: PoisoningSettings,
        *,
        entry: str,
        generator_for: GeneratorFor,
        progress: Progress,
    ) -> FamilyResult:
        from bastion.data.base import Dataset, DatasetProvenance

        t0 = time.perf_counter()
        planned = self.planned_rows(settings)
        problems = self.check_data(settings, data)
        if problems:
            return not_run(self.name, entry, planned, problems[0], t0)
        assert data.training is not None
        recipe = recipe_for(settings.recipe, data.training.card)
        spec = model.spec
        dataset = Dataset(
            "assessment",
            data.training.x,
            data.training.y,
            data.x,
            data.y,
            spec,
            DatasetProvenance(
                "assessment", data.training.source or "training data", "", int(data.training.y.shape[0]), data.n, ""
            ),
        )
        accuracy = float(data.correct.float().mean())
        clean = SimpleNamespace(classifier=model, card=SimpleNamespace(clean_accuracy=accuracy))
        attack = build_attack(settings)
        if isinstance(attack, CleanLabel) and not hasattr(model, "logits"):
            return not_run(
                self.name,
                entry,
                planned,
                "the clean-label attack needs a differentiable surrogate: assess a torch model",
                t0,
            )
        rows, results = [], []
        for at in planned:
            g = generator_for(at)
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
            try:
                r = poisoning_attack(
                    dataset,
                    attack,
                    rate=float(at["rate"]),
                    recipe=recipe,
                    seed=seed,
                    clean_model=clean,
                    progress=progress,
                )
            except BastionError as e:
                rows.append(MetricRow(entry, at, {}, complete=False, note=f"not run: {e}"))
                continue
            results.append(r)
            metrics = {
                "clean_accuracy": Estimate.rate(round(r.clean_accuracy * data.n), data.n, data.confidence),
                "accuracy_drop": Estimate.exact(r.accuracy_drop),
            }
            if r.attack_success_rate is not None:
                metrics["attack_success_rate"] = Estimate.rate(
                    round(r.attack_success_rate * r.success_inputs), r.success_inputs, data.confidence
                )
            rows.append(MetricRow(entry, at, metrics))
        return FamilyResult(self.name, entry, tuple(rows), payload=results, seconds=time.perf_counter() - t0)

    def section(self, results: list[FamilyResult], class_names: tuple[str, ...]) -> ReportSection | None:
        head = (
            "entry",
            "attack",
            "rate",
            "poisoned rows",
            "clean accuracy",
            "accuracy drop",
            "attack success",
            "clean model's rate",
            "note",
        )
        body = []
        for res in results:
            payload = {r.rate: r for r in res.payload} if isinstance(res.payload, list) else {}
            for row in res.rows:
                r: PoisoningResult | None = payload.get(float(row.at["rate"]))
                if r is None:
                    body.append((res.entry, "", f"{row.at['rate']:g}", "", "", "", "", "", row.note))
                    continue
                asr = "n/a (no trigger)" if r.attack_success_rate is None else f"{r.attack_success_rate:.3f}"
                base = "" if r.baseline_success_rate is None else f"{r.baseline_success_rate:.3f}"
                body.append(
                    (
                        res.entry,
                        r.attack,
                        f"{r.rate:g}",
                        str(r.poisoned_count),
                        f"{r.clean_accuracy:.3f}",
                        f"{r.accuracy_drop:+.3f}",
                        asr,
                        base,
                        row.note,
                    )
                )
        intro = (
            "Each row poisons a copy of the model's training data at one rate, trains the model's recipe on it and "
            "measures the result on the assessed test inputs. A backdoor that keeps clean accuracy while its "
            "trigger works is the dangerous kind: nothing in ordinary evaluation shows it. `bastion data check` "
            f"looks for such samples in a training set. MITRE ATLAS {ATLAS} (poison training data), AML.T0018 "
            "(backdoor ML model)."
        )
        return ReportSection(
            id="poisoning", title="Data poisoning", intro=intro, tables=((head, tuple(body)),), data={"atlas": ATLAS}
        )


FAMILIES.add("poisoning", PoisoningFamily())
