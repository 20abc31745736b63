"""Evasion: the policy's attacks at every budget eps, with robust accuracy and success rate per budget."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor

from bastion._progress import Progress
from bastion._torch import batch_slices
from bastion.assess.families.base import (
    FAMILIES,
    AssessData,
    AtValue,
    FamilyResult,
    FamilySettings,
    GeneratorFor,
    MetricRow,
    ReportSection,
)
from bastion.assess.metrics import Estimate, MetricInfo
from bastion.attacks import create_attack
from bastion.attacks.base import Attack, EvasionAttack
from bastion.errors import BastionError
from bastion.models.base import Classifier
from bastion.types import Norm, ThreatModel


class AttackEntry(FamilySettings):
    """One attack of the policy, run once per budget in ``eps``."""

    id: str | None = None
    attack: str
    norm: Literal["linf", "l2"] = "linf"
    eps: list[float] = Field(min_length=1)
    targeted: bool = False
    params: dict[str, Any] = Field(default_factory=dict)
    showcase_eps: float | None = None  # which budget the report's examples and findings show (set by the policy)

    @field_validator("eps")
    @classmethod
    def _eps_positive(cls, v: list[float]) -> list[float]:
        bad = [e for e in v if not math.isfinite(e) or e <= 0]
        if bad:
            raise ValueError(f"every eps must be a finite number > 0, got {bad}")
        if len(set(v)) != len(v):
            raise ValueError("eps values must be distinct")
        return sorted(v)

    @property
    def key(self) -> str:
        return self.id or f"{self.attack}-{self.norm}"

    def build(self, eps: float) -> Attack:
        threat = ThreatModel(norm=Norm.parse(self.norm), eps=eps, targeted=self.targeted)
        return create_attack(self.attack, threat, **self.params)


@dataclass(frozen=True)
class BudgetResult:
    """One attack at one eps, over the assessed samples.

    ``robust_accuracy``: fraction of all assessed samples classified correctly both clean and under attack.
    ``success_rate``: fraction of the attacked samples (the clean-correct ones) the attack made adversarial — the
    same definition as :attr:`bastion.attacks.base.AttackResult.success_rate`.
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
    robust_accuracy_ci: tuple[float, float] = (0.0, 1.0)
    success_rate_ci: tuple[float, float] = (0.0, 1.0)


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
class EvasionPayload:
    outcome: AttackOutcome
    examples: tuple[Example, ...]


class EvasionFamily:
    """Adversarial examples (MITRE ATLAS AML.T0043 / AML.T0015, OWASP ML01): every configured attack at every eps."""

    name: ClassVar[str] = "evasion"
    settings: ClassVar[type[FamilySettings]] = AttackEntry
    metrics: ClassVar[dict[str, MetricInfo]] = {
        "robust_accuracy": MetricInfo(
            "robust_accuracy", "fraction", "higher", "share of assessed inputs still classified correctly"
        ),
        "success_rate": MetricInfo(
            "success_rate", "fraction", "lower", "share of the attacked (clean-correct) inputs made adversarial"
        ),
        "mean_norm": MetricInfo("mean_norm", "value", "higher", "mean perturbation size of the successful examples"),
        "median_norm": MetricInfo("median_norm", "value", "higher", "median perturbation of the successful examples"),
        "mean_queries": MetricInfo("mean_queries", "value", "higher", "mean model queries per attacked input"),
    }
    examples_per_attack: int = 4

    def default_id(self, settings: AttackEntry) -> str:
        return settings.key

    def planned_rows(self, settings: AttackEntry) -> list[dict[str, AtValue]]:
        return [{"eps": e} for e in settings.eps]

    def check_data(self, settings: AttackEntry, data: AssessData) -> list[str]:
        return []

    def check(self, settings: AttackEntry) -> list[str]:
        try:
            settings.build(settings.eps[0])
        except BastionError as e:
            return [str(e)]
        return []

    def run(
        self,
        model: Classifier,
        data: AssessData,
        settings: AttackEntry,
        *,
        entry: str,
        generator_for: GeneratorFor,
        progress: Progress,
    ) -> FamilyResult:
        spec = model.spec
        t_start = time.perf_counter()
        cidx = data.correct.nonzero().squeeze(1)
        xc, yc = data.x[cidx], data.y[cidx]
        n = data.n
        show_eps = settings.showcase_eps if settings.showcase_eps is not None else settings.eps[len(settings.eps) // 2]
        budgets: list[BudgetResult] = []
        rows: list[MetricRow] = []
        examples: list[Example] = []
        show_norms: tuple[float, ...] = ()
        show_queries: tuple[int, ...] = ()
        errors: list[str] = []
        attack: Attack | None = None
        for eps in settings.eps:
            attack = settings.build(eps)
            blocked = getattr(model, "throttled", None)
            if isinstance(blocked, str):  # the endpoint stopped serving this client: measuring more would mislead
                note = f"eps {eps:g}: not run, {blocked}"
                errors.append(note)
                rows.append(MetricRow(entry=entry, at={"eps": eps}, metrics={}, complete=False, note=note))
                continue
            generator = generator_for({"eps": eps})
            batches = list(batch_slices(xc.shape[0], data.batch_size)) if xc.shape[0] else []
            progress.task(f"{entry} eps={eps:g}", max(1, len(batches)))
            success, norms, queries, adv, adv_labels = [], [], [], [], []
            complete = True
            notes: list[str] = []
            contributions: dict[str, int] = {}
            degradations = getattr(model, "degradations", None)
            seen = len(degradations) if isinstance(degradations, list) else 0
            t0 = time.perf_counter()
            for s in batches:
                target = (yc[s] + 1) % spec.num_classes if settings.targeted else None  # next class, cyclically
                r = attack.run(model, xc[s], yc[s], target=target, generator=generator)
                for component, count in r.details.get("contributions", {}).items():
                    contributions[component] = contributions.get(component, 0) + int(count)
                if not r.complete:
                    complete = False
                    notes.append(f"eps {eps:g}: {r.error}")
                success.append(r.success)
                norms.append(r.norms)
                queries.append(r.queries)
                adv.append(r.x_adv)
                adv_labels.append(r.adv_labels)
                progress.advance()
            if not batches:
                progress.advance()
            if isinstance(degradations, list) and degradations:  # degraded now or earlier (even at the clean
                complete = False  # predictions): attacks saw post-processed answers, so the figure is not the model's
                notes.append(
                    f"eps {eps:g}: answers degraded ({degradations[seen if len(degradations) > seen else -1]})"
                )
            errors += notes
            seconds = time.perf_counter() - t0
            succ = torch.cat(success) if success else torch.zeros(0, dtype=torch.bool)
            nrm = torch.cat(norms) if norms else torch.zeros(0)
            q = torch.cat(queries).float() if queries else torch.zeros(0)
            broken_norms = nrm[succ]
            n_broken = int(succ.sum())
            robust = Estimate.rate(int((~succ).sum()), n, data.confidence)
            rate = Estimate.rate(n_broken, int(succ.numel()), data.confidence)
            budget = BudgetResult(
                eps=eps,
                robust_accuracy=robust.value,
                success_rate=rate.value,
                mean_norm=float(broken_norms.mean()) if broken_norms.numel() else 0.0,
                median_norm=float(broken_norms.median()) if broken_norms.numel() else 0.0,
                mean_queries=float(q.mean()) if q.numel() else 0.0,
                seconds=seconds,
                n_attacked=int(succ.numel()),
                complete=complete,
                contributions=contributions,
                robust_accuracy_ci=(robust.low, robust.high),
                success_rate_ci=(rate.low, rate.high),
            )
            budgets.append(budget)
            rows.append(
                MetricRow(
                    entry=entry,
                    at={"eps": eps},
                    metrics={
                        "robust_accuracy": robust,
                        "success_rate": rate,
                        "mean_norm": Estimate.exact(budget.mean_norm),
                        "median_norm": Estimate.exact(budget.median_norm),
                        "mean_queries": Estimate.exact(budget.mean_queries),
                    },
                    complete=complete,
                    note="; ".join(notes),
                )
            )
            if math.isclose(eps, show_eps) and succ.numel():
                show_norms = tuple(float(v) for v in broken_norms)
                show_queries = tuple(int(v) for v in q[succ])
                xa, la = torch.cat(adv), torch.cat(adv_labels)
                order = torch.cat([succ.nonzero().squeeze(1), (~succ).nonzero().squeeze(1)])
                for j in order[: self.examples_per_attack].tolist():
                    examples.append(
                        Example(
                            index=int(data.indices[cidx[j]]),
                            attack=entry,
                            eps=eps,
                            label=int(yc[j]),
                            clean_pred=int(data.clean_pred[cidx[j]]),
                            adv_pred=int(la[j]),
                            x=xc[j].cpu(),
                            x_adv=xa[j].cpu(),
                        )
                    )
        assert attack is not None  # settings.eps has at least one value (schema)
        outcome = AttackOutcome(
            id=entry,
            attack=settings.attack,
            norm=settings.norm,
            targeted=settings.targeted,
            params=_plain(attack.params()) if isinstance(attack, EvasionAttack) else dict(settings.params),
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
        return FamilyResult(
            family=self.name,
            entry=entry,
            rows=tuple(rows),
            payload=EvasionPayload(outcome, tuple(examples)),
            seconds=time.perf_counter() - t_start,
        )

    def section(self, results: list[FamilyResult], class_names: tuple[str, ...]) -> ReportSection | None:
        return None  # the report's scorecard, robustness curves, examples and histograms render evasion


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.value if hasattr(v, "value") else v) for k, v in d.items()}


FAMILIES.add("evasion", EvasionFamily())
