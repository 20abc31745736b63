"""Run an assess policy against a model and data: every attack at every budget, with per-budget figures."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from bastion._progress import NullProgress, Progress
from bastion._torch import batch_slices, make_generator
from bastion._validate import label_problems, raise_if, tensor_problems
from bastion.assess.policy import AttackEntry, Policy, Threshold
from bastion.attacks.base import EvasionAttack
from bastion.attacks.sanity import (
    BudgetFigure,
    SanityFlag,
    check_black_box_beats_white_box,
    check_gradients,
    check_monotonic,
    check_randomness,
)
from bastion.errors import ConfigError, RemoteModelError
from bastion.models.base import Classifier, predict_labels


@dataclass(frozen=True)
class BudgetResult:
    """One attack at one eps, over the assessed samples.

    ``robust_accuracy``: fraction of all samples classified correctly both clean and under attack.
    ``success_rate``: fraction of the clean-correct samples the attack broke.
    """

    eps: float
    robust_accuracy: float
    success_rate: float
    mean_norm: float
    median_norm: float
    mean_queries: float
    seconds: float
    n_attacked: int
    complete: bool = True
    contributions: dict[str, int] = field(default_factory=dict)  # for suites: inputs broken by each component


@dataclass(frozen=True)
class AttackOutcome:
    """All budgets of one policy attack entry."""

    id: str
    attack: str
    norm: str
    targeted: bool
    params: dict[str, Any]
    threat_name: str
    atlas: tuple[str, ...]
    owasp: str
    budgets: tuple[BudgetResult, ...]
    showcase_eps: float
    showcase_norms: tuple[float, ...]  # perturbation norms of the successful examples at showcase_eps
    white_box: bool = True
    showcase_success_queries: tuple[int, ...] = ()  # queries each successful input needed, at showcase_eps
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class Example:
    """One input shown clean and adversarial in the report."""

    index: int
    attack: str
    eps: float
    label: int
    clean_pred: int
    adv_pred: int
    x: Tensor
    x_adv: Tensor


@dataclass(frozen=True)
class ThresholdCheck:
    rule: str
    attack: str
    eps: float
    metric: str
    value: float
    passed: bool


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

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


def _showcase_eps(entry: AttackEntry, thresholds: list[Threshold]) -> float:
    for t in thresholds:
        if t.attack == entry.key:
            return t.eps
    return entry.eps[len(entry.eps) // 2]


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
    examples_per_attack: int = 4,
) -> Assessment:
    """Attack ``model`` on a seeded subset of ``(x_test, y_test)`` as ``policy`` says."""
    spec = model.spec
    problems = tensor_problems(x_test, name="x_test", input_shape=spec.input_shape, bounds=spec.bounds)
    problems += label_problems(
        y_test,
        name="y_test",
        n=int(x_test.shape[0]) if isinstance(x_test, Tensor) else None,
        num_classes=spec.num_classes,
    )
    raise_if(problems, "assessment data")
    progress = progress or NullProgress()
    start = time.perf_counter()
    idx = select_samples(int(x_test.shape[0]), policy.samples, policy.seed)
    x, y = x_test[idx], y_test[idx]
    n = int(x.shape[0])
    clean_pred = predict_labels(model, x, batch_size=policy.batch_size)
    correct = clean_pred == y
    cidx = correct.nonzero().squeeze(1)
    xc, yc = x[cidx], y[cidx]
    generator = make_generator(policy.seed, getattr(model, "device", "cpu"))

    outcomes: list[AttackOutcome] = []
    examples: list[Example] = []
    for entry in policy.attacks:
        show_eps = _showcase_eps(entry, policy.thresholds)
        budgets: list[BudgetResult] = []
        show_norms: tuple[float, ...] = ()
        show_queries: tuple[int, ...] = ()
        errors: list[str] = []
        attack = None
        for eps in entry.eps:
            attack = entry.build(eps)
            batches = list(batch_slices(xc.shape[0], policy.batch_size)) if xc.shape[0] else []
            progress.task(f"{entry.key} eps={eps:g}", max(1, len(batches)))
            success, norms, queries, adv, adv_labels = [], [], [], [], []
            complete = True
            contributions: dict[str, int] = {}
            t0 = time.perf_counter()
            for s in batches:
                target = None
                if entry.targeted:
                    target = _next_class_targets(yc[s], spec.num_classes)
                r = attack.run(model, xc[s], yc[s], target=target, generator=generator)
                for component, count in r.details.get("contributions", {}).items():
                    contributions[component] = contributions.get(component, 0) + int(count)
                if not r.complete:
                    complete = False
                    errors.append(f"eps {eps:g}: {r.error}")
                success.append(r.success)
                norms.append(r.norms)
                queries.append(r.queries)
                adv.append(r.x_adv)
                adv_labels.append(r.adv_labels)
                progress.advance()
            if not batches:
                progress.advance()
            seconds = time.perf_counter() - t0
            succ = torch.cat(success) if success else torch.zeros(0, dtype=torch.bool)
            nrm = torch.cat(norms) if norms else torch.zeros(0)
            q = torch.cat(queries).float() if queries else torch.zeros(0)
            broken_norms = nrm[succ]
            budgets.append(
                BudgetResult(
                    eps=eps,
                    robust_accuracy=float((~succ).sum()) / n,
                    success_rate=int(succ.sum()) / succ.numel() if succ.numel() else 0.0,
                    mean_norm=float(broken_norms.mean()) if broken_norms.numel() else 0.0,
                    median_norm=float(broken_norms.median()) if broken_norms.numel() else 0.0,
                    mean_queries=float(q.mean()) if q.numel() else 0.0,
                    seconds=seconds,
                    n_attacked=int(succ.numel()),
                    complete=complete,
                    contributions=contributions,
                )
            )
            if math.isclose(eps, show_eps) and succ.numel():
                show_norms = tuple(float(v) for v in broken_norms)
                show_queries = tuple(int(v) for v in q[succ])
                xa, la = torch.cat(adv), torch.cat(adv_labels)
                order = torch.cat([succ.nonzero().squeeze(1), (~succ).nonzero().squeeze(1)])
                for j in order[:examples_per_attack].tolist():
                    examples.append(
                        Example(
                            index=int(idx[cidx[j]]),
                            attack=entry.key,
                            eps=eps,
                            label=int(yc[j]),
                            clean_pred=int(clean_pred[cidx[j]]),
                            adv_pred=int(la[j]),
                            x=xc[j].cpu(),
                            x_adv=xa[j].cpu(),
                        )
                    )
        assert attack is not None  # entry.eps has at least one value (policy schema)
        outcomes.append(
            AttackOutcome(
                id=entry.key,
                attack=entry.attack,
                norm=entry.norm,
                targeted=entry.targeted,
                params=_plain(attack.params()) if isinstance(attack, EvasionAttack) else dict(entry.params),
                threat_name=getattr(attack, "threat_name", "adversarial examples"),
                atlas=tuple(getattr(attack, "atlas", ())),
                owasp=str(getattr(attack, "owasp", "")),
                budgets=tuple(budgets),
                showcase_eps=show_eps,
                showcase_norms=show_norms,
                white_box=bool(getattr(attack, "white_box", True)),
                showcase_success_queries=show_queries,
                errors=tuple(errors),
            )
        )

    checks = []
    for t in policy.thresholds:
        out = next(o for o in outcomes if o.id == t.attack)
        b = next(b for b in out.budgets if math.isclose(b.eps, t.eps, rel_tol=1e-9))
        value = float(getattr(b, t.metric))
        checks.append(
            ThresholdCheck(
                rule=t.describe(), attack=t.attack, eps=t.eps, metric=t.metric, value=value, passed=t.passes(value)
            )
        )
    figures = [
        BudgetFigure(attack=o.id, norm=o.norm, eps=b.eps, robust_accuracy=b.robust_accuracy, white_box=o.white_box)
        for o in outcomes
        for b in o.budgets
        if not o.targeted
    ]
    sanity = [*check_monotonic(figures), *check_black_box_beats_white_box(figures)]
    if cidx.numel():
        sanity += check_gradients(model, xc[: policy.batch_size], yc[: policy.batch_size])
    try:
        sanity += check_randomness(model, x[: min(64, n)])
    except RemoteModelError as e:  # the endpoint died during the attacks; say so rather than lose the report
        sanity.append(SanityFlag("randomness", "warning", f"not checked: the model stopped answering ({e})"))
    return Assessment(
        policy=policy,
        n_samples=n,
        sample_indices=tuple(int(i) for i in idx),
        clean_accuracy=int(correct.sum()) / n,
        outcomes=tuple(outcomes),
        examples=tuple(examples),
        checks=tuple(checks),
        seconds=time.perf_counter() - start,
        threads=torch.get_num_threads(),
        sanity=tuple(sanity),
    )


def _next_class_targets(y: Tensor, num_classes: int) -> Tensor:
    """A deterministic target per input for targeted runs: the next class, cyclically."""
    return (y + 1) % num_classes


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.value if hasattr(v, "value") else v) for k, v in d.items()}
