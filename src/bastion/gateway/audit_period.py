"""What the gateway saw and did over a period, for an auditor: `bastion audit report --since --until`.

Everything comes from the gateway's own records — the hash-chained audit log, keys, incidents with their evidence,
actions and notes, threat-level changes — and, when a registry is named, the artifacts registered in the period
with their assessment verdicts. The chain is verified over the whole log (an edit before the period breaks what the
period's rows chain to), and a broken chain is the first thing the report says.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bastion.gateway.store.base import AuditEvent
from bastion.gateway.store.sql import SqlStore, verify_rows


@dataclass(frozen=True)
class Period:
    """[since, until) in Unix seconds."""

    since: float
    until: float

    def __contains__(self, t: object) -> bool:
        return isinstance(t, (int, float)) and self.since <= t < self.until

    def to_dict(self) -> dict[str, Any]:
        return {"since": self.since, "until": self.until, "since_utc": iso(self.since), "until_utc": iso(self.until)}


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def period_summary(store: SqlStore, period: Period, *, registry: Path | None = None) -> dict[str, Any]:
    """The period's activity as JSON-ready data (see the module docstring)."""
    checked, legacy, broken = verify_rows(store.iter_chain())
    events = store.events_between(period.since, period.until)
    keys = store.list_keys()
    names = {k.key_id: k.name for k in keys}
    traffic: dict[str, Counter[str]] = defaultdict(Counter)
    inputs: Counter[str] = Counter()
    alerts_by_atlas: Counter[str] = Counter()
    alerts_by_kind: Counter[str] = Counter()
    admin, service = [], []
    for e in events:
        if e.decision.startswith("admin:"):
            admin.append(_admin_action(e))
        elif e.decision.startswith("service:"):
            service.append({"time": e.time, "time_utc": iso(e.time), "event": e.decision, **dict(e.output)})
        if e.key_id is not None:
            outcome = "answered" if e.decision == "answered" else ("refused" if e.status < 500 else "failed")
            traffic[e.key_id][outcome] += 1
            if outcome == "refused":
                traffic[e.key_id][e.decision] += 1
            inputs[e.key_id] += e.n_inputs
        for a in e.alerts:
            alerts_by_atlas[str(a.get("atlas", "?"))] += 1
            alerts_by_kind[str(a.get("kind", "?"))] += 1
    incidents = [
        _incident(r)
        for r in store.list_incidents()
        if r.opened_at in period
        or r.updated_at in period
        or any(x.get("time") in period for x in [*r.evidence, *r.actions, *r.notes])
        or (r.opened_at < period.since and r.status != "resolved")  # still open during the period
    ]
    levels = [
        {**c.to_dict(), "time_utc": iso(c.time), "key_name": names.get(c.key_id or "")}
        for c in store.list_level_changes()
        if c.time in period
    ]
    return {
        "format": "bastion-audit-report/1",
        "period": period.to_dict(),
        "chain": {"verified": checked, "before_chain": legacy, "broken_at": broken, "intact": broken is None},
        "events": len(events),
        "keys": {
            "created": [_key(k) for k in keys if k.created_at in period],
            "revoked": [_key(k) for k in keys if k.revoked_at in period],
            "activity": [
                {"key_id": k, "name": names.get(k), "inputs": inputs[k], **dict(traffic[k])}
                for k in sorted(traffic, key=lambda k: -sum(traffic[k].values()))
            ],
        },
        "admin_actions": admin,
        "service_events": service,
        "incidents": incidents,
        "level_changes": levels,
        "alerts": {"by_atlas": dict(alerts_by_atlas.most_common()), "by_kind": dict(alerts_by_kind.most_common())},
        "timeline": _timeline(events, period),
        "registry": _registry(registry, period) if registry is not None else None,
    }


def _key(k: Any) -> dict[str, Any]:
    return {
        "key_id": k.key_id,
        "name": k.name,
        "scopes": list(k.scopes),
        "created_utc": iso(k.created_at),
        "revoked_utc": iso(k.revoked_at),
    }


def _admin_action(e: AuditEvent) -> dict[str, Any]:
    out = dict(e.output)
    return {
        "time": e.time,
        "time_utc": iso(e.time),
        "action": e.decision.removeprefix("admin:"),
        "by": out.get("by") or e.key_id or e.client,
        "target": out.get("target") or out.get("key_id") or out.get("incident_id"),
        "status": e.status,
        "request_id": e.request_id,
    }


def _incident(r: Any) -> dict[str, Any]:
    timeline = [
        *({"time": a.get("time"), "what": "alert", "detail": a.get("message", "")} for a in r.evidence),
        *({"time": a.get("time"), "what": str(a.get("action")), "detail": a.get("detail")} for a in r.actions),
        *(
            {"time": n.get("time"), "what": str(n.get("status")), "detail": {"by": n.get("by"), "note": n.get("note")}}
            for n in r.notes
        ),
    ]
    timeline.sort(key=lambda x: float(x["time"] or 0))
    for t in timeline:
        t["time_utc"] = iso(float(t["time"])) if t["time"] is not None else None
    return {
        "incident_id": r.incident_id,
        "kind": r.kind,
        "key_id": r.key_id,
        "severity": r.severity,
        "atlas": r.atlas,
        "status": r.status,
        "summary": r.summary,
        "alerts": r.alert_count,
        "opened_utc": iso(r.opened_at),
        "acknowledged_by": [n.get("by") for n in r.notes if n.get("status") == "acknowledged"],
        "resolved_by": [n.get("by") for n in r.notes if n.get("status") == "resolved"],
        "timeline": timeline,
    }


def _timeline(events: list[AuditEvent], period: Period, bins: int = 48) -> dict[str, Any]:
    """Requests (answered, refused) and alerts per time bin over the period, for the report's figures."""
    width = max(60.0, (period.until - period.since) / bins)
    n = max(1, int((period.until - period.since) // width) + 1)
    answered, refused, alerts = [0] * n, [0] * n, [0] * n
    for e in events:
        i = min(n - 1, int((e.time - period.since) // width))
        if e.key_id is not None:
            (answered if e.decision == "answered" else refused)[i] += 1
        alerts[i] += len(e.alerts)
    return {"bin_seconds": width, "start": period.since, "answered": answered, "refused": refused, "alerts": alerts}


def _registry(root: Path, period: Period) -> dict[str, Any]:
    from bastion.registry import Registry

    reg = Registry.open(root)
    try:
        rows = []
        for row in reg.rows():
            created = datetime.fromisoformat(row.created).timestamp()
            if created not in period:
                continue
            item = {
                "id": row.id,
                "kind": row.kind,
                "name": row.name,
                "version": row.version,
                "signer": row.signer,
                "created_utc": iso(created),
            }
            if row.kind == "report":
                assessment = reg.manifest(row).assessment or {}
                item["verdict"] = assessment.get("verdict")
                item["policy"] = assessment.get("policy")
            rows.append(item)
        return {"root": str(root), "artifacts": rows}
    finally:
        reg.close()
