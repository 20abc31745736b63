"""The cleaning pipeline: validate → detect → remove or quarantine → (retrain), with a record of every removal.

:func:`check_dataset` runs the checks over a training set and returns every finding; :func:`clean_dataset` drops
(or sets aside) the rows of the removable findings and returns the cleaned data with a :class:`CleaningRecord`
naming each removed row, the checks that implicated it and their scores, and the digests of the data before and
after. The record is the dataset's provenance from then on: whoever trains on the cleaned set can say what was
taken out of the original and why.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import torch
from torch import Tensor

from bastion._progress import NullProgress, Progress
from bastion.defenses.data.confusion import ConfusionReport, ConfusionSettings, confusion_training
from bastion.defenses.data.findings import Finding
from bastion.defenses.data.poison import POISON_DETECTORS, PoisonReport, detect_poison
from bastion.errors import ConfigError
from bastion.models.zoo.recipe import Recipe, train_recipe

CHECKS = (
    "schema",
    "range",
    "duplicates",
    "test-leakage",
    "near-duplicates",
    "class-balance",
    "label-errors",
    "poison",
    "confusion",
)
# what ``clean`` removes unless told otherwise: data that is broken, copied, mislabelled or poisoned
# a largest gap at or above this share of the threshold is reported as a warning, never as a clean bill
NEAR_GAP = 0.6
DEFAULT_REMOVE = ("schema", "range", "duplicates", "conflicting-duplicates", "label-errors", "poison", "confusion")
# trusted rows the confusion check takes from a dataset's test split when it is not given any
TRUSTED_ROWS = 2000


@dataclass(frozen=True)
class CheckSettings:
    """Which checks run and how. ``recipe`` trains the model whose features the poison detector reads and the
    cross-validation models of the label check (default: the data's reference net); ``gap`` is the poison
    decision rule's threshold in robust standard deviations; ``label_epochs`` the cross-validation models' epochs
    (None: enough for about 1,500 optimiser steps, between 2 and 100 epochs); ``near_tolerance`` the near-duplicate distance as a
    share of the value range; ``confusion`` how the confusion check (confusion training) runs."""

    checks: tuple[str, ...] = CHECKS
    detector: str = "projection-gap"
    gap: float = 3.0
    recipe: Recipe | None = None
    folds: int = 3
    label_epochs: int | None = None
    near_tolerance: float = 0.02
    max_class_ratio: float = 3.0
    seed: int = 0
    confusion: ConfusionSettings = field(default_factory=ConfusionSettings)

    def __post_init__(self) -> None:
        problems = [f"unknown check {c!r} (choose from {', '.join(CHECKS)})" for c in self.checks if c not in CHECKS]
        if not self.checks:
            problems.append(f"choose at least one check from {', '.join(CHECKS)}")
        if self.detector not in POISON_DETECTORS:
            problems.append(f"unknown poison detector {self.detector!r}; choose from {POISON_DETECTORS.names()}")
        if not 0 < self.near_tolerance < 1:
            problems.append(f"near_tolerance must be in (0, 1), got {self.near_tolerance}")
        if not self.gap > 0:
            problems.append(f"gap must be > 0, got {self.gap}")
        if self.folds < 2 or (self.label_epochs is not None and self.label_epochs < 1):
            problems.append(f"folds must be >= 2 and label_epochs >= 1, got {self.folds} and {self.label_epochs}")
        if problems:
            raise ConfigError("invalid data-check settings", problems=problems)


def label_epochs_for(rows: int, folds: int, batch_size: int, *, steps: int = 1500) -> int:
    """Epochs that give each cross-validation model about ``steps`` optimiser steps (2 to 100): a small dataset
    needs many epochs to fit at all, a large one few (5 on Fashion-MNIST's 60,000 images)."""
    per_epoch = max(1, -(-(rows - rows // folds) // batch_size))
    return int(min(100, max(2, -(-steps // per_epoch))))


def feature_epochs_for(rows: int, batch_size: int, epochs: int, *, steps: int = 2000) -> int:
    """At least ``epochs``, and enough for about ``steps`` optimiser steps (at most 200 epochs): a backdoor's samples
    separate from their class in the features only once the model has trained long enough (on 5,000 Fashion-MNIST
    images: no gap after 390 steps, a clear one after 1,250; docs/data-integrity.md)."""
    per_epoch = max(1, -(-rows // batch_size))
    return int(min(200, max(epochs, -(-steps // per_epoch))))


def training_part(dataset: Any) -> tuple[Tensor, Tensor, bool]:
    """The rows a check is about: the training split, or all of a user's file when it has only one split (then the
    last value is False)."""
    if dataset.x_train.shape[0] > 0:
        return dataset.x_train, dataset.y_train, True
    if dataset.x_test.shape[0] == 0:
        raise ConfigError(f"{dataset.name} holds no samples to check")
    return dataset.x_test, dataset.y_test, False


@dataclass(frozen=True)
class DataCheck:
    """Every finding over a training set, the poison detector's full decision and what the check cost."""

    dataset: dict[str, Any]
    findings: tuple[Finding, ...]
    poison: PoisonReport | None
    settings: dict[str, Any]
    features_from: str
    seconds: dict[str, float] = field(default_factory=dict)
    confusion: ConfusionReport | None = None
    trusted_from: str = ""

    @property
    def verdict(self) -> str:
        """ "problems found" when any finding is an error or a warning, else "clean"."""
        return "problems found" if any(f.severity in ("error", "warning") for f in self.findings) else "clean"

    def removable(self, checks: tuple[str, ...] = DEFAULT_REMOVE) -> dict[int, dict[str, float | None]]:
        """Row -> {check: score} over the removable findings of ``checks``."""
        rows: dict[int, dict[str, float | None]] = {}
        for f in self.findings:
            if not f.removable or f.check not in checks:
                continue
            for j, i in enumerate(f.indices):
                rows.setdefault(int(i), {})[f.check] = f.scores[j] if f.scores else None
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "dataset": self.dataset,
            "findings": [f.to_dict() for f in self.findings],
            "poison": None if self.poison is None else self.poison.to_dict(),
            "settings": self.settings,
            "features_from": self.features_from,
            "seconds": self.seconds,
            "confusion": None if self.confusion is None else self.confusion.to_dict(),
            "trusted_from": self.trusted_from,
        }


def features_of(model: Any, x: Tensor, *, batch: int = 2048) -> Tensor:
    """(N, d) penultimate features of ``model`` (a TorchClassifier) on ``x``, in batches."""
    from bastion.models.features import penultimate

    f = penultimate(model)
    with torch.no_grad():
        return torch.cat([f(x[i : i + batch]) for i in range(0, x.shape[0], batch)]).float()


def check_dataset(
    dataset: Any,
    *,
    settings: CheckSettings | None = None,
    model: Any = None,
    trusted: tuple[Tensor, Tensor] | None = None,
    progress: Progress | None = None,
) -> DataCheck:
    """Run ``settings.checks`` over ``dataset``'s training rows. ``model``: a classifier trained on exactly these
    rows whose penultimate features the poison detector reads and which the confusion check trains further (a
    TorchClassifier); without it Bastion trains one with the recipe. ``trusted``: clean (x, y) rows with correct
    labels for the confusion check; without them it takes up to 2,000 rows of the dataset's test split, and skips
    (saying so) when there is none."""
    from bastion.defenses.data import labels as label_check
    from bastion.defenses.data import validation as v

    settings = settings or CheckSettings()
    progress = progress or NullProgress()
    x, y, has_train = training_part(dataset)
    spec = dataset.spec
    findings: list[Finding] = []
    seconds: dict[str, float] = {}

    def timed(name: str, fn: Any) -> None:
        t0 = time.perf_counter()
        findings.extend(fn())
        seconds[name] = round(time.perf_counter() - t0, 3)

    checks = settings.checks
    timed("schema", lambda: v.schema(x, y, spec))
    if any(f.check == "schema" and not f.indices for f in findings):
        raise ConfigError(f"{dataset.name} cannot be checked: {findings[0].message}")
    if "range" in checks:
        timed("range", lambda: v.value_range(x, spec))
    if "duplicates" in checks:
        timed("duplicates", lambda: v.duplicates(x, y))
    if "test-leakage" in checks and has_train:
        timed("test-leakage", lambda: v.test_leakage(x, dataset.x_test))
    if "near-duplicates" in checks:
        timed("near-duplicates", lambda: v.near_duplicates(x, y, spec, tolerance=settings.near_tolerance))
    if "class-balance" in checks:
        timed("class-balance", lambda: v.class_balance(y, spec, max_ratio=settings.max_class_ratio))
    broken = {i for f in findings if f.check in ("schema", "range") for i in f.indices}
    keep = torch.ones(y.shape[0], dtype=torch.bool)
    if broken:
        keep[torch.tensor(sorted(broken))] = False
    kept = keep.nonzero().flatten()
    recipe = settings.recipe or Recipe.for_data(spec, dataset.name)
    if "label-errors" in checks:
        t0 = time.perf_counter()
        got = label_check.label_issues(
            dataset,
            x[kept],
            y[kept],
            recipe=Recipe(
                recipe.architecture,
                dict(recipe.arch_params),
                settings.label_epochs or label_epochs_for(int(kept.numel()), settings.folds, recipe.batch_size),
                recipe.batch_size,
                recipe.lr,
                recipe.weight_decay,
            ),
            folds=settings.folds,
            seed=settings.seed,
            progress=progress,
        )
        findings.extend(_reindex(f, kept) for f in got)
        seconds["label-errors"] = round(time.perf_counter() - t0, 3)
    poison = None
    features_from = "the given model" if model is not None else ""

    def feature_model() -> Any:
        nonlocal model, features_from
        if model is None:
            epochs = feature_epochs_for(int(kept.numel()), recipe.batch_size, recipe.epochs)
            r = Recipe(
                recipe.architecture, dict(recipe.arch_params), epochs, recipe.batch_size, recipe.lr, recipe.weight_decay
            )
            model = train_recipe(r, dataset, x[kept], y[kept], seed=settings.seed, progress=progress).classifier
            features_from = f"{recipe.architecture} trained by Bastion on these rows ({epochs} epochs)"
        return model

    if "poison" in checks:
        t0 = time.perf_counter()
        feats = features_of(feature_model(), x[kept])
        report = detect_poison(feats, y[kept], detector=settings.detector, gap=settings.gap, seed=settings.seed)
        flagged = torch.zeros(y.shape[0], dtype=torch.bool)
        flagged[kept[report.flagged]] = True
        scores = torch.full((y.shape[0],), float("nan"), dtype=torch.float64)
        scores[kept] = report.scores
        poison = PoisonReport(report.detector, report.gap_threshold, report.classes, flagged, scores, report.settings)
        findings.append(_poison_finding(poison, spec))
        seconds["poison"] = round(time.perf_counter() - t0, 3)
    confusion = None
    trusted_from = ""
    if "confusion" in checks:
        t0 = time.perf_counter()
        if trusted is None and has_train and dataset.x_test.shape[0] > 0:
            pick = torch.randperm(dataset.x_test.shape[0], generator=torch.Generator().manual_seed(settings.seed))
            pick = pick[:TRUSTED_ROWS]
            trusted = (dataset.x_test[pick], dataset.y_test[pick])
            trusted_from = f"{pick.numel()} rows of the dataset's test split"
        elif trusted is not None:
            trusted_from = f"{trusted[1].shape[0]} given trusted rows"
        if trusted is None:
            findings.append(
                Finding(
                    "confusion",
                    "info",
                    "confusion training did not run: it needs a few hundred trusted clean rows (--trusted FILE, or "
                    "data with a test split); without it an adaptive poisoner who hides the trigger from the feature "
                    "detectors goes unseen",
                )
            )
        else:
            confusion = confusion_training(
                feature_model().module,
                x[kept],
                y[kept],
                trusted[0],
                trusted[1],
                num_classes=spec.num_classes,
                settings=settings.confusion,
                progress=progress,
            )
            flagged = torch.zeros(y.shape[0], dtype=torch.bool)
            flagged[kept[confusion.flagged]] = True
            scores = torch.full((y.shape[0],), float("nan"), dtype=torch.float64)
            scores[kept] = confusion.scores
            confusion = replace(confusion, flagged=flagged, scores=scores)
            findings.append(_confusion_finding(confusion, spec))
        seconds["confusion"] = round(time.perf_counter() - t0, 3)
    return DataCheck(
        dataset={
            "name": dataset.name,
            "sha256": dataset.provenance.sha256,
            "rows": int(y.shape[0]),
            "split": "train" if has_train else "all",
        },
        findings=tuple(findings),
        poison=poison,
        settings={
            "checks": list(checks),
            "detector": settings.detector,
            "gap": settings.gap,
            "recipe": recipe.to_dict(),
            "folds": settings.folds,
            "label_epochs": settings.label_epochs,
            "near_tolerance": settings.near_tolerance,
            "seed": settings.seed,
            "confusion": asdict(settings.confusion),
        },
        features_from=features_from,
        seconds=seconds,
        confusion=confusion,
        trusted_from=trusted_from,
    )


def _reindex(f: Finding, kept: Tensor) -> Finding:
    """``f`` with its indices (into the kept rows) mapped back to rows of the whole training set."""
    idx = tuple(int(kept[i]) for i in f.indices)
    return Finding(f.check, f.severity, f.message, idx, f.scores, f.unit, f.removable, f.details)


def _poison_finding(report: PoisonReport, spec: Any) -> Finding:
    names = spec.class_names or tuple(str(i) for i in range(spec.num_classes))
    details = {"detector": report.detector, "gap_threshold": report.gap_threshold}
    details["classes"] = [
        {"class": names[c.label] if c.label < len(names) else str(c.label)} | c.__dict__ for c in report.classes
    ]
    idx = report.indices
    if not idx.numel():
        worst = max(report.classes, key=lambda c: c.gap, default=None)
        tail = f" (largest gap {worst.gap:.2f} in class {names[worst.label]})" if worst else ""
        if worst is not None and worst.gap >= NEAR_GAP * report.gap_threshold:
            # a backdoor whose cluster is still joining its class (an under-trained feature model) sits here: on 5,000
            # Fashion-MNIST images a working 5% BadNets gave 2.99; clean classes stay below 1.6 on Fashion-MNIST
            return Finding(
                "poison",
                "warning",
                f"no class crosses the gap threshold of {report.gap_threshold:g}, but class {names[worst.label]} comes "
                f"close (gap {worst.gap:.2f}): inspect its samples, or check again with a feature model trained "
                "longer (--epochs)",
                details=details | {"near_class": worst.label},
            )
        return Finding(
            "poison",
            "info",
            f"no class looks attacked by {report.detector}: no class splits off a minority across a gap of "
            f"{report.gap_threshold:g} robust standard deviations{tail}",
            details=details,
        )
    attacked = ", ".join(
        f"{names[c.label]} ({c.flagged} samples, gap {c.gap:.1f})" for c in report.classes if c.attacked
    )
    order = torch.argsort(report.scores[idx], descending=True)
    idx = idx[order]
    return Finding(
        "poison",
        "error",
        f"{idx.numel()} samples look poisoned; attacked classes: {attacked}",
        tuple(idx.tolist()),
        tuple(report.scores[idx].tolist()),
        f"{report.detector} score",
        removable=True,
        details=details,
    )


def _confusion_finding(report: ConfusionReport, spec: Any) -> Finding:
    names = spec.class_names or tuple(str(i) for i in range(spec.num_classes))
    details = {
        "threshold": report.threshold,
        "attacked_threshold": report.attacked_threshold,
        "held_out_false_rate": report.false_rate,
        "folds": list(report.folds),
        "classes": [
            {"class": names[c.label] if c.label < len(names) else str(c.label)} | asdict(c) for c in report.classes
        ],
    }
    idx = report.indices
    if not report.conclusive:
        return Finding(
            "confusion",
            "warning",
            "confusion training is inconclusive: the model could not be confused (more than "
            f"{report.settings.get('max_false', 0):.1%} of held-out trusted rows kept their label at every check), so "
            "it says nothing about poison; check that the trusted rows are clean and labelled like DATA",
            details=details,
        )
    if not idx.numel():
        worst = max(report.classes, key=lambda c: c.fitted, default=None)
        tail = f" (most: {worst.fitted} in class {names[worst.label]})" if worst is not None and worst.fitted else ""
        return Finding(
            "confusion",
            "info",
            f"no class looks attacked by confusion training: the confused model fits too few rows of any class with "
            f"their label{tail}",
            details=details,
        )
    attacked = ", ".join(
        f"{names[c.label]} ({c.fitted} of {c.size} rows still fitted)" for c in report.classes if c.attacked
    )
    idx = idx[torch.argsort(report.scores[idx], descending=True)]
    return Finding(
        "confusion",
        "error",
        f"{idx.numel()} samples look poisoned: a model confused on trusted data still fits them; attacked classes: "
        f"{attacked}",
        tuple(idx.tolist()),
        tuple(report.scores[idx].tolist()),
        "probability of the given label under the confused model",
        removable=True,
        details=details,
    )


@dataclass(frozen=True)
class CleaningRecord:
    """What cleaning did, as provenance: the source and result digests, the settings, and every removed row with
    the checks that implicated it and their scores."""

    source: dict[str, Any]
    result: dict[str, Any]
    action: str
    removed_by: tuple[str, ...]
    rows: tuple[dict[str, Any], ...]
    check_settings: dict[str, Any]
    created: str
    versions: dict[str, str]
    retrained: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "bastion cleaning record",
            "source": self.source,
            "result": self.result,
            "action": self.action,
            "removed_by": list(self.removed_by),
            "removed": len(self.rows),
            "rows": list(self.rows),
            "check_settings": self.check_settings,
            "created": self.created,
            "versions": self.versions,
            "retrained": self.retrained,
        }


@dataclass(frozen=True)
class Cleaned:
    """The kept rows, the removed (quarantined) rows with their original indices, and the record (whose result
    digest is filled in by whoever writes the cleaned data, as `bastion data clean` does)."""

    x: Tensor
    y: Tensor
    removed_x: Tensor
    removed_y: Tensor
    removed_index: Tensor
    record: CleaningRecord


def clean_dataset(
    dataset: Any,
    check: DataCheck,
    *,
    remove: tuple[str, ...] = DEFAULT_REMOVE,
    action: str = "remove",
) -> Cleaned:
    """Drop (``action="remove"``) or set aside (``"quarantine"``: the rows are returned for review) every row of a
    removable finding of the ``remove`` checks."""
    from bastion.models.zoo.card import runtime_versions

    if action not in ("remove", "quarantine"):
        raise ConfigError(f"action must be 'remove' or 'quarantine', got {action!r}")
    unknown = [c for c in remove if c not in (*CHECKS, "conflicting-duplicates")]
    if unknown:
        raise ConfigError(f"unknown checks to remove by: {unknown}; choose from {', '.join(DEFAULT_REMOVE)}")
    x, y, _ = training_part(dataset)
    if check.dataset.get("sha256") != dataset.provenance.sha256:
        raise ConfigError("the check was run on other data (its digest differs): check this dataset, then clean it")
    rows = check.removable(remove)
    drop = torch.zeros(y.shape[0], dtype=torch.bool)
    if rows:
        drop[torch.tensor(sorted(rows))] = True
    kept = (~drop).nonzero().flatten()
    gone = drop.nonzero().flatten()
    record = CleaningRecord(
        source={"name": dataset.name, "sha256": dataset.provenance.sha256, "rows": int(y.shape[0])},
        result={"rows": int(kept.numel())},
        action=action,
        removed_by=tuple(remove),
        rows=tuple({"index": i, "checks": rows[i]} for i in sorted(rows)),
        check_settings=check.settings,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        versions=runtime_versions(),
    )
    return Cleaned(x[kept], y[kept], x[gone], y[gone], gone, record)
