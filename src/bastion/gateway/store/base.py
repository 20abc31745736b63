"""The gateway's persistent state as plain records, and the small interfaces a backend implements.

The pipeline talks only to these interfaces, so SQLite (the embedded default) and a server database are
interchangeable; `bastion.gateway.store.sql` implements all three over SQLAlchemy for any URL it supports.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class KeyRecord:
    """An API key as stored: never the key itself, only a keyed hash of its secret part."""

    key_id: str
    name: str
    scopes: tuple[str, ...]
    secret_hash: str
    created_at: float
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class AuditEvent:
    """One request, as the audit log keeps it (``event_id`` is assigned by the store)."""

    time: float
    request_id: str
    key_id: str | None
    model: str | None
    input_hash: str | None
    n_inputs: int
    decision: str
    status: int
    latency_ms: float
    output: dict[str, Any] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    client: str | None = None
    event_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "time": self.time,
            "request_id": self.request_id,
            "key_id": self.key_id,
            "model": self.model,
            "input_hash": self.input_hash,
            "n_inputs": self.n_inputs,
            "decision": self.decision,
            "status": self.status,
            "latency_ms": self.latency_ms,
            "output": self.output,
            "alerts": self.alerts,
            "client": self.client,
        }


@dataclass(frozen=True)
class IncidentRecord:
    """An incident: alerts of one kind about one key, grouped until someone resolves it."""

    incident_id: int | None
    kind: str
    key_id: str | None
    severity: str
    atlas: str
    summary: str
    status: str  # open | acknowledged | resolved
    opened_at: float
    updated_at: float
    alert_count: int = 1
    evidence: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident_id,
            "kind": self.kind,
            "key_id": self.key_id,
            "severity": self.severity,
            "atlas": self.atlas,
            "summary": self.summary,
            "status": self.status,
            "opened_at": self.opened_at,
            "updated_at": self.updated_at,
            "alert_count": self.alert_count,
            "evidence": self.evidence,
            "actions": self.actions,
            "notes": self.notes,
        }


@dataclass(frozen=True)
class LevelChange:
    """A threat-level change for one key (or the service, ``key_id`` None), automatic or by an admin."""

    time: float
    key_id: str | None
    old: str
    new: str
    reason: str
    actor: str  # "policy" or the admin key id

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "key_id": self.key_id,
            "old": self.old,
            "new": self.new,
            "reason": self.reason,
            "actor": self.actor,
        }


@dataclass(frozen=True)
class IntelRecord:
    """One imported threat-intelligence indicator: ``kind`` "input" (``value`` a fingerprint, made under ``scheme``,
    matched within ``radius`` bits) or "client" (``value`` an IP address or network). ``ref`` is its STIX id,
    ``bundle`` the digest of the bundle it came in, ``source`` who shared it."""

    ref: str
    bundle: str
    source: str
    kind: str
    value: str
    atlas: str
    imported_at: float
    scheme: dict[str, Any] | None = None
    radius: int | None = None
    valid_until: float | None = None


class KeyStore(Protocol):
    def add_key(self, record: KeyRecord) -> None: ...
    def get_key(self, key_id: str) -> KeyRecord | None: ...
    def list_keys(self) -> list[KeyRecord]: ...
    def revoke_key(self, key_id: str, at: float) -> bool: ...


class AuditStore(Protocol):
    def append(self, event: AuditEvent) -> int:
        """Persist one event durably before returning its id (the response waits for this)."""
        ...

    def append_many(self, events: list[AuditEvent]) -> list[int]:
        """Persist several events in one transaction, chained in order (group commit); their ids in order."""
        ...

    def iter_events(self, after_id: int = 0, batch: int = 1000) -> Iterator[AuditEvent]: ...
    def events_between(self, since: float, until: float) -> list[AuditEvent]: ...
    def recent_events(self, limit: int = 100, since: float | None = None) -> list[AuditEvent]: ...
    def count_events(self) -> int: ...
    def iter_chain(self, batch: int = 1000) -> Iterator[tuple[int, dict[str, Any], str | None]]:
        """Every row in order as (event_id, stored column values, chain link), to verify the hash chain."""
        ...


class IncidentStore(Protocol):
    def add_incident(self, record: IncidentRecord) -> int: ...
    def update_incident(self, record: IncidentRecord) -> None: ...
    def get_incident(self, incident_id: int) -> IncidentRecord | None: ...
    def list_incidents(self, status: str | None = None) -> list[IncidentRecord]: ...


class LevelLog(Protocol):
    def add_level_change(self, change: LevelChange) -> None: ...
    def list_level_changes(self, key_id: str | None = None) -> list[LevelChange]: ...


class IntelStore(Protocol):
    def add_indicators(self, records: list[IntelRecord]) -> int:
        """Store ``records`` in one transaction, skipping refs already stored; returns how many were new."""
        ...

    def list_indicators(self) -> list[IntelRecord]: ...
    def remove_indicators(self, bundle: str) -> int: ...
    def intel_revision(self) -> tuple[int, int]:
        """(count, largest id): changes whenever indicators are added or removed."""
        ...


class Store(KeyStore, AuditStore, IncidentStore, LevelLog, IntelStore, Protocol):
    """Everything the gateway persists."""

    def close(self) -> None: ...
