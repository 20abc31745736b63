"""Run an assess policy against a model and data: every entry of every family, then the gate's verdict.

The verdict is one of ``pass``, ``fail``, ``inconclusive`` or ``no gate`` and never passes falsely: a threshold on
a row that was cut short (an endpoint that failed or throttled, answers that degraded mid-run) is inconclusive, and
a sanity-check error (gradient masking, randomised answers, black-box beating white-box) fails the gate unless the
policy lists it under ``accept_sanity``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from bastion._progress import NullProgress, Progress
from bastion._torch import make_generator
from bastion._validate import label_problems, raise_if, tensor_problems
from bastion.assess.families.base import AssessData, AtValue, FamilyResult, MetricRow, TrainingData
from bastion.assess.families.evasion import AttackOutcome, BudgetResult, EvasionPayload, Example
from bastion.assess.jobs import derived_seed, merge, plan
from bastion.assess.metrics import Estimate
from bastion.assess.policy import Policy, Threshold
from bastion.attacks.sanity import (
    BudgetFigure,
    SanityFlag,
    check_black_box_beats_white_box,
    check_degenerate,
    check_gradients,
    check_monotonic,
    check_randomness,
)
from bastion.errors import ConfigError, RemoteModelError

if TYPE_CHECKING:
    from bastion.assess.executors import Executor
from bastion.models.base import Classifier, predict_labels

__all__ = [
    "Assessment",
    "AttackOutcome",
    "BudgetResult",
    "Example",
    "GateStatus",
    "ThresholdCheck",
    "run_assessment",
    "select_samples",
]

GateStatus = Literal["pass", "fail", "inconclusive", "no gate"]
CheckStatus = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True)
class ThresholdCheck:
    """One threshold judged: ``value`` is the figure compared (the point value or the chosen interval bound)."""

    rule: str
    entry: str
    at: dict[str, AtValue]
    metric: str
    bound: str
    value: float
    estimate: Estimate | None
    status: CheckStatus
    reason: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "entry": self.entry,
            "at": dict(self.at),
            "metric": self.metric,
            "bound": self.bound,
            "value": self.value,
            "estimate": self.estimate.to_dict() if self.estimate else None,
            "status": self.status,
            "passed": self.passed,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Assessment:
    """Everything an assess run measured (turned into a Report for rendering)."""

    policy: Policy
    n_samples: int
    sample_indices: tuple[int, ...]
    clean_accuracy: float
    outcomes: tuple[AttackOutcome, ...]
    examples: tuple[Example, ...]
    checks: tuple[ThresholdCheck, ...]
    seconds: float
    threads: int
    sanity: tuple[SanityFlag, ...] = ()
    results: tuple[FamilyResult, ...] = ()
    gate: GateStatus = "no gate"
    gate_reasons: tuple[str, ...] = ()
    clean_accuracy_ci: tuple[float, float] = (0.0, 1.0)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True only for a gate that was set and passed."""
        return self.gate == "pass"

    @property
    def rows(self) -> tuple[MetricRow, ...]:
        return tuple(r for res in self.results for r in res.rows)


def select_samples(n_available: int, n: int, seed: int) -> Tensor:
    """A seeded random subset of ``n`` indices of the test split, sorted."""
    if n > n_available:
        raise ConfigError(
            f"the policy asks for {n} samples but the test split has only {n_available}; "
            f"lower `samples` (or pass --samples {n_available})"
        )
    perm = torch.randperm(n_available, generator=make_generator(seed))
    return perm[:n].sort().values


def run_assessment(
    model: Classifier,
    x_test: Tensor,
    y_test: Tensor,
    policy: Policy,
    *,
    progress: Progress | None = None,
    training: TrainingData | None = None,
    executor: Executor | None = None,
) -> Assessment:
    """Run every entry of ``policy`` on a seeded subset of ``(x_test, y_test)`` and judge its thresholds.

    ``training`` is what the model was trained on, when known (membership inference needs it). Every entry's data
    needs are checked before any entry runs. ``executor`` (``bastion.assess.executors``: a process pool, a Ray
    cluster) runs the policy as independent jobs there, with the same figures as without it."""
    spec = model.spec
    problems = tensor_problems(x_test, name="x_test", input_shape=spec.input_shape, bounds=spec.bounds)
    problems += label_problems(
        y_test,
        name="y_test",
        n=int(x_test.shape[0]) if isinstance(x_test, Tensor) else None,
        num_classes=spec.num_classes,
    )
    if training is not None:
        problems += tensor_problems(training.x, name="training x", input_shape=spec.input_shape, bounds=spec.bounds)
        problems += label_problems(
            training.y,
            name="training y",
            n=int(training.x.shape[0]) if isinstance(training.x, Tensor) else None,
            num_classes=spec.num_classes,
        )
    raise_if(problems, "assessment data")
    progress = progress or NullProgress()
    start = time.perf_counter()
    idx = select_samples(int(x_test.shape[0]), policy.samples, policy.seed)
    x, y = x_test[idx], y_test[idx]
    clean_pred = predict_labels(model, x, batch_size=policy.batch_size)
    rest = torch.ones(int(x_test.shape[0]), dtype=torch.bool)
    rest[idx] = False
    data = AssessData(
        x,
        y,
        idx,
        clean_pred,
        policy.batch_size,
        policy.confidence,
        reference_x=x_test[rest],
        reference_y=y_test[rest],
        training=training,
    )
    unfit = [f"{e.id}: {p}" for e in policy.entries() for p in e.family.check_data(e.settings, data)]
    if unfit:
        raise ConfigError("the data cannot run this policy", problems=unfit)
    device = getattr(model, "device", "cpu")

    results: list[FamilyResult] = []
    extra: dict[str, Any] = {}
    if executor is not None:
        jobs = plan(policy, data, executor.shards)
        t_jobs = time.perf_counter()
        results = merge(policy, data, jobs, executor.run(model, data, policy.seed, jobs, progress))
        extra["distributed"] = {
            "executor": executor.name,
            "jobs": len(jobs),
            "shards": executor.shards,
            "seconds": round(time.perf_counter() - t_jobs, 3),
        }
    for entry in policy.entries() if executor is None else []:
        blocked = getattr(model, "throttled", None)
        if isinstance(blocked, str):  # the endpoint stopped serving this client: nothing more is measured
            note = f"not run: {blocked}"
            rows = tuple(
                MetricRow(entry.id, at, {}, complete=False, note=note)
                for at in entry.family.planned_rows(entry.settings)
            )
            results.append(FamilyResult(entry.family.name, entry.id, rows))
            continue

        def generator_for(at: Mapping[str, AtValue], _entry: str = entry.id) -> torch.Generator:
            return make_generator(derived_seed(policy.seed, _entry, at), device)

        results.append(
            entry.family.run(
                model, data, entry.settings, entry=entry.id, generator_for=generator_for, progress=progress
            )
        )
    payloads = [r.payload for r in results if isinstance(r.payload, EvasionPayload)]
    outcomes = tuple(p.outcome for p in payloads)
    examples = tuple(e for p in payloads for e in p.examples)
    sanity = _sanity(model, data, outcomes)
    checks = tuple(judge(t, results) for t in policy.thresholds)
    gate, reasons = verdict(checks, sanity, policy)
    cut = [f"{r.entry}: {r.note}" for res in results for r in res.rows if not r.complete]
    if gate == "no gate" and cut:  # nothing to gate, but a cut-short run must not end as if all was well
        gate, reasons = "inconclusive", ["no thresholds, and the run was cut short", *cut]
    clean = Estimate.rate(int(data.correct.sum()), data.n, policy.confidence)
    return Assessment(
        policy=policy,
        n_samples=data.n,
        sample_indices=tuple(int(i) for i in idx),
        clean_accuracy=clean.value,
        outcomes=outcomes,
        examples=examples,
        checks=checks,
        seconds=time.perf_counter() - start,
        threads=torch.get_num_threads(),
        sanity=tuple(sanity),
        results=tuple(results),
        gate=gate,
        gate_reasons=tuple(reasons),
        clean_accuracy_ci=(clean.low, clean.high),
        extra=extra,
    )


def _sanity(model: Classifier, data: AssessData, outcomes: tuple[AttackOutcome, ...]) -> list[SanityFlag]:
    figures = [
        BudgetFigure(attack=o.id, norm=o.norm, eps=b.eps, robust_accuracy=b.robust_accuracy, white_box=o.white_box)
        for o in outcomes
        for b in o.budgets
        if not o.targeted
    ]
    sanity = [
        *check_monotonic(figures),
        *check_black_box_beats_white_box(figures),
        *check_degenerate(data.clean_pred, data.y),
    ]
    cidx = data.correct.nonzero().squeeze(1)
    if cidx.numel() and outcomes:
        sanity += check_gradients(model, data.x[cidx[: data.batch_size]], data.y[cidx[: data.batch_size]])
    try:
        sanity += check_randomness(model, data.x[: min(64, data.n)])
    except RemoteModelError as e:  # the endpoint died during the attacks; say so rather than lose the report
        sanity.append(SanityFlag("randomness", "warning", f"not checked: the model stopped answering ({e})"))
    return sanity


def judge(threshold: Threshold, results: list[FamilyResult]) -> ThresholdCheck:
    """Judge one threshold against the rows measured (the policy guarantees exactly one row matches)."""
    rows = [r for res in results if res.entry == threshold.entry for r in res.rows if threshold.matches(r.at)]
    common = {
        "rule": threshold.describe(),
        "entry": threshold.entry,
        "metric": threshold.metric,
        "bound": threshold.bound,
    }
    if len(rows) != 1 or threshold.metric not in rows[0].metrics:
        why = rows[0].note if rows and rows[0].note else "the row or metric was not measured"
        return ThresholdCheck(
            at=threshold.selector, value=float("nan"), estimate=None, status="inconclusive", reason=why, **common
        )
    row = rows[0]
    est = row.metrics[threshold.metric]
    value = est.bound(threshold.bound)
    if not row.complete:
        return ThresholdCheck(
            at=row.at,
            value=value,
            estimate=est,
            status="inconclusive",
            reason=f"cut short: {row.note or 'the measurement did not finish'}",
            **common,
        )
    status: CheckStatus = "pass" if threshold.passes(value) else "fail"
    return ThresholdCheck(at=row.at, value=value, estimate=est, status=status, **common)


def verdict(
    checks: tuple[ThresholdCheck, ...], sanity: list[SanityFlag], policy: Policy
) -> tuple[GateStatus, list[str]]:
    """fail beats inconclusive beats pass; sanity errors the policy does not accept fail a gate that was set.

    (A run without thresholds that was cut short is made inconclusive by the caller, not "no gate".)"""
    if not checks:
        return "no gate", ["the policy sets no thresholds"]
    reasons = [f"{c.rule}: measured {c.value:.4g}" for c in checks if c.status == "fail"]
    reasons += [
        f"sanity check {f.check} failed: {f.message}"
        for f in sanity
        if f.severity == "error" and f.check not in policy.accept_sanity
    ]
    if reasons:
        return "fail", reasons
    unsure = [f"{c.rule}: {c.reason}" for c in checks if c.status == "inconclusive"]
    if unsure:
        return "inconclusive", unsure
    return "pass", []
