"""Evasion: the policy's attacks at every budget eps, with robust accuracy and success rate per budget."""

from __future__ import annotations

import itertools
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


@dataclass
class BudgetPart:
    """What one part of an entry measured: one budget over batches ``[lo, hi)`` of the clean-correct inputs."""

    eps: float
    lo: int
    hi: int
    success: list[Tensor] = field(default_factory=list)
    norms: list[Tensor] = field(default_factory=list)
    queries: list[Tensor] = field(default_factory=list)
    adv: list[Tensor] = field(default_factory=list)
    adv_labels: list[Tensor] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    contributions: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    blocked: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    threat_name: str = "adversarial examples"
    atlas: tuple[str, ...] = ()
    owasp: str = ""
    white_box: bool = True


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
        t_start = time.perf_counter()
        outputs = []
        for eps in settings.eps:
            n_batches = len(self._batches(data))
            progress.task(f"{entry} eps={eps:g}", max(1, n_batches))
            outputs.append(
                self.run_part(
                    model,
                    data,
                    settings,
                    (eps, 0, n_batches),
                    entry=entry,
                    generator_for=generator_for,
                    progress=progress,
                )
            )
            if not n_batches:
                progress.advance()
        return self.merge(data, settings, entry, outputs, seconds=time.perf_counter() - t_start)

    # ---- splitting one entry into independent jobs (bastion.assess.jobs): a budget, a range of batches
    @staticmethod
    def _batches(data: AssessData) -> list[slice]:
        n = int(data.correct.sum())
        return list(batch_slices(n, data.batch_size)) if n else []

    def parts(self, settings: AttackEntry, data: AssessData, shards: int) -> list[tuple[float, int, int]]:
        """One part per budget and run of consecutive batches (at most ``shards`` per budget). Each batch draws
        from its own generator (``generator_for({"eps": eps, "batch": i})``), so the figures are the same however
        the batches are split or wherever they run."""
        n = len(self._batches(data))
        out: list[tuple[float, int, int]] = []
        for eps in settings.eps:
            k = max(1, min(shards, n))
            bounds = [round(i * n / k) for i in range(k + 1)]
            out += [(eps, lo, hi) for lo, hi in itertools.pairwise(bounds) if hi > lo or n == 0]
        return out

    def run_part(
        self,
        model: Classifier,
        data: AssessData,
        settings: AttackEntry,
        part: tuple[float, int, int],
        *,
        entry: str,
        generator_for: GeneratorFor,
        progress: Progress | None = None,
    ) -> BudgetPart:
        """Attack the clean-correct inputs of batches ``[lo, hi)`` at ``eps`` (``part``)."""
        spec = model.spec
        eps, lo, hi = part
        cidx = data.correct.nonzero().squeeze(1)
        xc, yc = data.x[cidx], data.y[cidx]
        out = BudgetPart(eps, lo, hi)
        blocked = getattr(model, "throttled", None)
        if isinstance(blocked, str):  # the endpoint stopped serving this client: measuring more would mislead
            out.blocked = f"eps {eps:g}: not run, {blocked}"
            return out
        attack = settings.build(eps)
        degradations = getattr(model, "degradations", None)
        seen = len(degradations) if isinstance(degradations, list) else 0
        t0 = time.perf_counter()
        for i, s in enumerate(self._batches(data)[lo:hi], start=lo):
            target = (yc[s] + 1) % spec.num_classes if settings.targeted else None  # next class, cyclically
            r = attack.run(model, xc[s], yc[s], target=target, generator=generator_for({"eps": eps, "batch": i}))
            for component, count in r.details.get("contributions", {}).items():
                out.contributions[component] = out.contributions.get(component, 0) + int(count)
            if not r.complete:
                out.notes.append(f"eps {eps:g}: {r.error}")
            out.success.append(r.success)
            out.norms.append(r.norms)
            out.queries.append(r.queries)
            out.adv.append(r.x_adv)
            out.adv_labels.append(r.adv_labels)
            if progress is not None:
                progress.advance()
        if isinstance(degradations, list) and degradations:  # degraded now or earlier (even at the clean
            # predictions): attacks saw post-processed answers, so the figure is not the model's
            out.notes.append(
                f"eps {eps:g}: answers degraded ({degradations[seen if len(degradations) > seen else -1]})"
            )
        out.seconds = time.perf_counter() - t0
        out.params = _plain(attack.params()) if isinstance(attack, EvasionAttack) else dict(settings.params)
        out.threat_name = getattr(attack, "threat_name", "adversarial examples")
        out.atlas = tuple(getattr(attack, "atlas", ()))
        out.owasp = str(getattr(attack, "owasp", ""))
        out.white_box = bool(getattr(attack, "white_box", True))
        return out

    def merge(
        self,
        data: AssessData,
        settings: AttackEntry,
        entry: str,
        outputs: list[BudgetPart],
        *,
        seconds: float | None = None,
    ) -> FamilyResult:
        """One entry's result from its parts (any order): per budget, the parts' batches in order."""
        n = data.n
        cidx = data.correct.nonzero().squeeze(1)
        xc, yc = data.x[cidx], data.y[cidx]
        show_eps = settings.showcase_eps if settings.showcase_eps is not None else settings.eps[len(settings.eps) // 2]
        budgets: list[BudgetResult] = []
        rows: list[MetricRow] = []
        examples: list[Example] = []
        show_norms: tuple[float, ...] = ()
        show_queries: tuple[int, ...] = ()
        errors: list[str] = []
        described: BudgetPart | None = None
        for eps in settings.eps:
            parts = sorted((p for p in outputs if p.eps == eps), key=lambda p: p.lo)
            blocked = [p.blocked for p in parts if p.blocked]
            if blocked:
                errors.append(blocked[0])
                rows.append(MetricRow(entry=entry, at={"eps": eps}, metrics={}, complete=False, note=blocked[0]))
                continue
            described = described or (parts[0] if parts else None)
            notes = [note for p in parts for note in p.notes]
            complete = not notes
            errors += notes
            contributions: dict[str, int] = {}
            for p in parts:
                for component, count in p.contributions.items():
                    contributions[component] = contributions.get(component, 0) + count
            succ = _cat([t for p in parts for t in p.success], torch.bool)
            nrm = _cat([t for p in parts for t in p.norms], torch.float32)
            q = _cat([t for p in parts for t in p.queries], torch.float32).float()
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
                seconds=sum(p.seconds for p in parts),
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
                xa = torch.cat([t for p in parts for t in p.adv])
                la = torch.cat([t for p in parts for t in p.adv_labels])
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
        if described is None:  # every budget blocked: describe the attack from its settings
            attack = settings.build(settings.eps[0])
            described = BudgetPart(settings.eps[0], 0, 0)
            described.params = _plain(attack.params()) if isinstance(attack, EvasionAttack) else dict(settings.params)
            described.threat_name = getattr(attack, "threat_name", "adversarial examples")
            described.atlas = tuple(getattr(attack, "atlas", ()))
            described.owasp = str(getattr(attack, "owasp", ""))
            described.white_box = bool(getattr(attack, "white_box", True))
        outcome = AttackOutcome(
            id=entry,
            attack=settings.attack,
            norm=settings.norm,
            targeted=settings.targeted,
            params=described.params,
            threat_name=described.threat_name,
            atlas=described.atlas,
            owasp=described.owasp,
            budgets=tuple(budgets),
            showcase_eps=show_eps,
            showcase_norms=show_norms,
            white_box=described.white_box,
            showcase_success_queries=show_queries,
            errors=tuple(errors),
        )
        return FamilyResult(
            family=self.name,
            entry=entry,
            rows=tuple(rows),
            payload=EvasionPayload(outcome, tuple(examples)),
            seconds=seconds if seconds is not None else sum(p.seconds for p in outputs),
        )

    def section(self, results: list[FamilyResult], class_names: tuple[str, ...]) -> ReportSection | None:
        return None  # the report's scorecard, robustness curves, examples and histograms render evasion


def _cat(parts: list[Tensor], dtype: torch.dtype) -> Tensor:
    return torch.cat(parts) if parts else torch.zeros(0, dtype=dtype)


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.value if hasattr(v, "value") else v) for k, v in d.items()}


FAMILIES.add("evasion", EvasionFamily())
