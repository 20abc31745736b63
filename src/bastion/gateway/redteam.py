"""Scheduled red-team runs against a live service: each run kept with its verdict, and a regression against the
previous run opened as an incident in the gateway's store (`bastion redteam run`, from a timer).

A run is a folder ``<runs>/<UTC time>/`` holding the assess report (``index.html``, ``results.json``) and
``run.json`` (verdict, the run it was compared with, the regressions found). Runs compare with the newest earlier
run that finished, metric by metric (``bastion.assess.baseline.regressions``), and a verdict that got worse (pass to
fail or inconclusive) counts as a regression too.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.gateway.admin import AdminHandle
from bastion.monitors.base import Alert, Severity

VERDICT_RANK = {"pass": 0, "no gate": 0, "inconclusive": 1, "fail": 2}


@dataclass(frozen=True)
class RedTeamRun:
    folder: Path
    verdict: str
    previous: Path | None
    regressions: list[str] = field(default_factory=list)
    incident_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "verdict": self.verdict,
            "previous": str(self.previous) if self.previous else None,
            "regressions": self.regressions,
            "incident_id": self.incident_id,
        }


def new_run_folder(runs: Path) -> Path:
    """A fresh folder for this run, named by its UTC start time (runs sort by name)."""
    runs.mkdir(parents=True, exist_ok=True)
    base = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    folder, n = runs / base, 1
    while folder.exists():
        folder, n = runs / f"{base}-{n}", n + 1
    folder.mkdir()
    return folder


def previous_run(runs: Path, current: Path) -> Path | None:
    """The newest run before ``current`` that finished (has its run.json)."""
    done = sorted(p for p in runs.iterdir() if p.is_dir() and p.name < current.name and (p / "run.json").is_file())
    return done[-1] if done else None


def record_run(
    handle: AdminHandle,
    folder: Path,
    verdict: str,
    previous: Path | None,
    metric_regressions: list[str],
    *,
    url: str,
    model: str,
) -> RedTeamRun:
    """Write ``run.json``, audit the run, and open (or update) a red-team incident when it regressed."""
    found = list(metric_regressions)
    if previous is not None:
        before = json.loads((previous / "run.json").read_text()).get("verdict", "no gate")
        if VERDICT_RANK.get(verdict, 2) > VERDICT_RANK.get(before, 0):
            found.insert(0, f"verdict {before} before, {verdict} now")
    incident_id = None
    if found:
        alert = Alert(
            monitor="redteam",
            kind="redteam_regression",
            key_id=None,
            severity=Severity.CRITICAL if verdict == "fail" else Severity.WARNING,
            message=f"scheduled red-team run against {model} regressed: {'; '.join(found[:5])}",
            score=float(len(found)),
            atlas="AML.T0043",
            time=time.time(),
            evidence={"run": str(folder), "previous": str(previous), "regressions": found, "url": url},
        )
        incident_id = handle.incidents.record_alert(alert).incident_id
    run = RedTeamRun(folder, verdict, previous, found, incident_id)
    (folder / "run.json").write_text(json.dumps({**run.to_dict(), "url": url, "model": model}, indent=2))
    handle.record("redteam_run", f"{model}: {verdict}, {len(found)} regressions ({folder.name})")
    return run
