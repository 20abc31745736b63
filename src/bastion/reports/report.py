"""Reports as frozen data: built once from an assessment, rendered to HTML, JSON or the terminal."""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import torch

from bastion._version import __version__
from bastion.assess.families import FAMILIES, ReportSection
from bastion.assess.runner import Assessment, Example

Severity = Literal["high", "medium", "low", "info"]


@dataclass(frozen=True)
class Finding:
    """One statement the report makes about a threat, with its evidence and standard identifiers."""

    threat: str
    severity: Severity
    summary: str
    atlas: tuple[str, ...] = ()
    owasp: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "threat": self.threat,
            "severity": self.severity,
            "summary": self.summary,
            "atlas": list(self.atlas),
            "owasp": self.owasp,
            "evidence": self.evidence,
        }


@dataclass(frozen=True)
class Report:
    """An assess report. ``examples`` carry tensors for figures; everything else is plain data."""

    title: str
    created: str
    model: dict[str, Any]
    data: dict[str, Any]
    policy: dict[str, Any]
    clean_accuracy: float
    n_samples: int
    attacks: tuple[dict[str, Any], ...]
    checks: tuple[dict[str, Any], ...]
    findings: tuple[Finding, ...]
    timings: dict[str, float]
    versions: dict[str, str]
    examples: tuple[Example, ...] = ()
    class_names: tuple[str, ...] = ()
    sanity: tuple[dict[str, Any], ...] = ()
    gate: str = "no gate"
    gate_reasons: tuple[str, ...] = ()
    rows: tuple[dict[str, Any], ...] = ()
    sections: tuple[ReportSection, ...] = ()
    clean_accuracy_ci: tuple[float, float] = (0.0, 1.0)

    @property
    def passed(self) -> bool:
        """True only when a gate was set and passed ("no gate" is not a pass)."""
        return self.gate == "pass"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": 1,
            "title": self.title,
            "created": self.created,
            "passed": self.passed,
            "gate": {"status": self.gate, "reasons": list(self.gate_reasons)},
            "model": self.model,
            "data": self.data,
            "policy": self.policy,
            "clean_accuracy": self.clean_accuracy,
            "clean_accuracy_ci": list(self.clean_accuracy_ci),
            "rows": list(self.rows),
            "sections": [{"id": s.id, "title": s.title, "data": s.data} for s in self.sections],
            "n_samples": self.n_samples,
            "attacks": list(self.attacks),
            "thresholds": list(self.checks),
            "findings": [f.to_dict() for f in self.findings],
            "sanity": list(self.sanity),
            "threats": threat_table(self.attacks),
            "examples": [
                {
                    "index": e.index,
                    "attack": e.attack,
                    "eps": e.eps,
                    "label": e.label,
                    "clean_pred": e.clean_pred,
                    "adv_pred": e.adv_pred,
                }
                for e in self.examples
            ],
            "timings": self.timings,
            "versions": self.versions,
        }


def threat_table(attacks: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for a in attacks:
        row = seen.setdefault(
            a["threat"], {"threat": a["threat"], "atlas": a["atlas"], "owasp": a["owasp"], "attacks": []}
        )
        row["attacks"].append(a["id"])
    return list(seen.values())


def versions() -> dict[str, str]:
    import sklearn

    return {
        "bastion": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def _severity(ratio: float) -> Severity:
    if ratio < 0.5:
        return "high"
    if ratio < 0.8:
        return "medium"
    return "low"


def build_report(
    assessment: Assessment,
    *,
    model: dict[str, Any],
    data: dict[str, Any],
    class_names: tuple[str, ...] = (),
    title: str | None = None,
    timings: dict[str, float] | None = None,
) -> Report:
    """Turn an assessment plus the model card and data provenance into a report."""
    attacks = []
    findings = []
    clean = assessment.clean_accuracy
    for o in assessment.outcomes:
        budgets = [
            {
                "eps": b.eps,
                "robust_accuracy": b.robust_accuracy,
                "success_rate": b.success_rate,
                "mean_norm": b.mean_norm,
                "median_norm": b.median_norm,
                "mean_queries": b.mean_queries,
                "seconds": b.seconds,
                "n_attacked": b.n_attacked,
                "complete": b.complete,
                "contributions": dict(b.contributions),
                "robust_accuracy_ci": list(b.robust_accuracy_ci),
                "success_rate_ci": list(b.success_rate_ci),
            }
            for b in o.budgets
        ]
        attacks.append(
            {
                "id": o.id,
                "attack": o.attack,
                "norm": o.norm,
                "targeted": o.targeted,
                "params": o.params,
                "threat": o.threat_name,
                "atlas": list(o.atlas),
                "owasp": o.owasp,
                "budgets": budgets,
                "showcase_eps": o.showcase_eps,
                "showcase_norms": list(o.showcase_norms),
                "white_box": o.white_box,
                "showcase_success_queries": list(o.showcase_success_queries),
                "errors": list(o.errors),
            }
        )
        show = next((b for b in o.budgets if b.eps == o.showcase_eps), None)
        if show is None:  # that budget was not run (the endpoint stopped serving): no finding to state
            continue
        ratio = show.robust_accuracy / clean if clean > 0 else 0.0
        findings.append(
            Finding(
                threat=o.threat_name,
                severity=_severity(ratio),
                summary=(
                    f"{o.id} at {o.norm} eps {o.showcase_eps:g}: accuracy falls from {clean:.1%} to "
                    f"{show.robust_accuracy:.1%} ({show.success_rate:.1%} of correctly classified inputs broken)"
                ),
                atlas=o.atlas,
                owasp=o.owasp,
                evidence={
                    "attack": o.id,
                    "eps": o.showcase_eps,
                    "robust_accuracy": show.robust_accuracy,
                    "clean_accuracy": clean,
                },
            )
        )
    checks = tuple(c.to_dict() for c in assessment.checks)
    sections = []
    by_family: dict[str, list[Any]] = {}
    for r in assessment.results:
        by_family.setdefault(r.family, []).append(r)
    for name, results in by_family.items():
        section = FAMILIES.get(name).section(results, class_names)
        if section is not None:
            sections.append(section)
    return Report(
        title=title or f"Bastion robustness assessment of {model.get('name', 'model')}",
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        model=model,
        data=data,
        policy=assessment.policy.model_dump(mode="json"),
        clean_accuracy=clean,
        n_samples=assessment.n_samples,
        attacks=tuple(attacks),
        checks=checks,
        findings=tuple(findings),
        timings={"assessment_seconds": round(assessment.seconds, 3), "threads": assessment.threads, **(timings or {})},
        versions=versions(),
        examples=assessment.examples,
        class_names=class_names,
        sanity=tuple(f.to_dict() for f in assessment.sanity),
        gate=assessment.gate,
        gate_reasons=assessment.gate_reasons,
        rows=tuple({**r.to_dict(), "family": res.family} for res in assessment.results for r in res.rows),
        sections=tuple(sections),
        clean_accuracy_ci=assessment.clean_accuracy_ci,
    )
