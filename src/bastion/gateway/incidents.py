"""Incidents: alerts of one kind about one key grouped into a case, with the playbook that answers it.

An alert opens an incident, or updates the open (or acknowledged) one for the same kind and key: the count, the
highest severity and the evidence (the alert that opened it and the latest 19) are kept. Each incident records what the gateway did
automatically (its playbook's actions, threat-level changes) and the steps it recommends to a person. Admins
acknowledge and resolve incidents through the API or ``bastion incidents``.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass

from bastion.gateway.errors import GatewayError
from bastion.gateway.store.base import IncidentRecord, IncidentStore
from bastion.monitors.base import Alert

EVIDENCE_KEPT = 20
STATUSES = ("open", "acknowledged", "resolved")


@dataclass(frozen=True)
class Playbook:
    """How an incident of one kind is answered: by the gateway at once, and by a person afterwards."""

    title: str
    steps: tuple[str, ...]


def registered_playbooks() -> dict[str, Playbook]:
    """One playbook per registered monitor, as the monitor's registry entry states it."""
    from bastion.monitors import MONITORS

    kinds = [MONITORS.get(n) for n in MONITORS.names()]
    return {k.name: Playbook(k.playbook_title, k.playbook_steps) for k in kinds}


DEFAULT_PLAYBOOK = Playbook("Security alert", ("Review the evidence and the key's traffic in the audit log.",))


class IncidentManager:
    """Opens, updates, acknowledges and resolves incidents over an IncidentStore; thread-safe."""

    def __init__(self, store: IncidentStore, playbooks: dict[str, Playbook] | None = None) -> None:
        self.store = store
        self.playbooks = dict(registered_playbooks() if playbooks is None else playbooks)
        self._lock = threading.Lock()

    def _current(self, kind: str, key_id: str | None) -> IncidentRecord | None:
        for status in ("open", "acknowledged"):
            for rec in self.store.list_incidents(status):
                if rec.kind == kind and rec.key_id == key_id:
                    return rec
        return None

    def record_alert(self, alert: Alert) -> IncidentRecord:
        """Open or update the incident this alert belongs to."""
        with self._lock:
            now = alert.time
            current = self._current(alert.kind, alert.key_id)
            evidence = alert.to_dict()
            if current is None:
                book = self.playbooks.get(alert.kind, DEFAULT_PLAYBOOK)
                rec = IncidentRecord(
                    incident_id=None,
                    kind=alert.kind,
                    key_id=alert.key_id,
                    severity=alert.severity.name.lower(),
                    atlas=alert.atlas,
                    summary=f"{book.title}: {alert.message}",
                    status="open",
                    opened_at=now,
                    updated_at=now,
                    evidence=[evidence],
                    actions=[{"time": now, "action": "playbook", "detail": list(book.steps)}],
                )
                return dataclasses.replace(rec, incident_id=self.store.add_incident(rec))
            severity = max(current.severity, alert.severity.name.lower(), key=_severity_rank)
            rec = dataclasses.replace(
                current,
                severity=severity,
                updated_at=now,
                alert_count=current.alert_count + 1,
                # the alert that opened the case stays first; the latest ones after it
                evidence=[current.evidence[0], *[*current.evidence[1:], evidence][-(EVIDENCE_KEPT - 1) :]],
            )
            self.store.update_incident(rec)
            return rec

    def add_action(self, key_id: str | None, action: str, detail: object, now: float | None = None) -> None:
        """Note an automatic action (e.g. a threat-level change) on every live incident of that key."""
        with self._lock:
            for status in ("open", "acknowledged"):
                for rec in self.store.list_incidents(status):
                    if rec.key_id == key_id:
                        entry = {"time": now or time.time(), "action": action, "detail": detail}
                        self.store.update_incident(dataclasses.replace(rec, actions=[*rec.actions, entry]))

    def transition(self, incident_id: int, status: str, actor: str, note: str = "") -> IncidentRecord:
        """Acknowledge or resolve an incident; a resolved incident stays resolved."""
        if status not in ("acknowledged", "resolved"):
            raise GatewayError("bad_status", f"status must be 'acknowledged' or 'resolved', got {status!r}")
        with self._lock:
            rec = self.store.get_incident(incident_id)
            if rec is None:
                raise GatewayError("no_such_incident", f"no incident {incident_id}")
            if rec.status == "resolved":
                raise GatewayError("already_resolved", f"incident {incident_id} is already resolved")
            now = time.time()
            entry = {"time": now, "by": actor, "status": status, "note": note}
            rec = dataclasses.replace(rec, status=status, updated_at=now, notes=[*rec.notes, entry])
            self.store.update_incident(rec)
            return rec

    def list(self, status: str | None = None) -> list[IncidentRecord]:
        if status is not None and status not in STATUSES:
            raise GatewayError("bad_status", f"status must be one of {', '.join(STATUSES)}, got {status!r}")
        return self.store.list_incidents(status)


def _severity_rank(name: str) -> int:
    return {"info": 0, "warning": 1, "critical": 2}.get(name, 0)
