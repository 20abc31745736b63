"""The gateway's store over SQLAlchemy Core: SQLite by default (WAL mode), any SQLAlchemy URL otherwise.

Each write commits before it returns. With SQLite in WAL mode a committed transaction is in the write-ahead log on
disk, so it survives the process being killed at any instant; ``synchronous`` chooses whether it also survives the
machine losing power (``FULL``: an fsync per commit) or not (``NORMAL``, the default: cheaper, still safe against a
killed process).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bastion.errors import ConfigError
from bastion.gateway.store.base import AuditEvent, IncidentRecord, IntelRecord, KeyRecord, LevelChange

_META = sa.MetaData()

KEYS = sa.Table(
    "api_keys",
    _META,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("scopes", sa.String(200), nullable=False),
    sa.Column("secret_hash", sa.String(128), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float, nullable=True),
)

AUDIT = sa.Table(
    "audit_events",
    _META,
    sa.Column("event_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("time", sa.Float, nullable=False, index=True),
    sa.Column("request_id", sa.String(64), nullable=False),
    sa.Column("key_id", sa.String(32), nullable=True, index=True),
    sa.Column("model", sa.String(200), nullable=True),
    sa.Column("input_hash", sa.String(64), nullable=True),
    sa.Column("n_inputs", sa.Integer, nullable=False),
    sa.Column("decision", sa.String(64), nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("output", sa.Text, nullable=False),
    sa.Column("alerts", sa.Text, nullable=False),
    sa.Column("client", sa.String(100), nullable=True),
    sa.Column("chain", sa.String(64), nullable=True),  # sha256(previous chain + this row): tamper evidence
)

INCIDENTS = sa.Table(
    "incidents",
    _META,
    sa.Column("incident_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(100), nullable=False),
    sa.Column("key_id", sa.String(32), nullable=True, index=True),
    sa.Column("severity", sa.String(20), nullable=False),
    sa.Column("atlas", sa.String(40), nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("status", sa.String(20), nullable=False, index=True),
    sa.Column("opened_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("alert_count", sa.Integer, nullable=False),
    sa.Column("evidence", sa.Text, nullable=False),
    sa.Column("actions", sa.Text, nullable=False),
    sa.Column("notes", sa.Text, nullable=False),
)

LEVELS = sa.Table(
    "threat_level_changes",
    _META,
    sa.Column("change_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("time", sa.Float, nullable=False),
    sa.Column("key_id", sa.String(32), nullable=True, index=True),
    sa.Column("old", sa.String(20), nullable=False),
    sa.Column("new", sa.String(20), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),
)

INTEL = sa.Table(
    "intel_indicators",
    _META,
    sa.Column("indicator_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ref", sa.String(200), nullable=False, unique=True),
    sa.Column("bundle", sa.String(64), nullable=False, index=True),
    sa.Column("source", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("scheme", sa.Text, nullable=True),
    sa.Column("radius", sa.Integer, nullable=True),
    sa.Column("atlas", sa.String(40), nullable=False),
    sa.Column("imported_at", sa.Float, nullable=False),
    sa.Column("valid_until", sa.Float, nullable=True),
)

_GET_KEY = "SELECT key_id, name, scopes, secret_hash, created_at, revoked_at FROM api_keys WHERE key_id = ?"
_AUDIT_COLUMNS = (
    "time",
    "request_id",
    "key_id",
    "model",
    "input_hash",
    "n_inputs",
    "decision",
    "status",
    "latency_ms",
    "output",
    "alerts",
    "client",
)
_APPEND = f"INSERT INTO audit_events ({', '.join(_AUDIT_COLUMNS)}, chain) VALUES ({', '.join('?' * (len(_AUDIT_COLUMNS) + 1))})"
_LAST_CHAIN = "SELECT chain FROM audit_events ORDER BY event_id DESC LIMIT 1"
GENESIS = "0" * 64


def chain_link(previous: str | None, row: dict[str, Any]) -> str:
    """The chain value of an audit row: sha256 over the previous row's chain and this row's columns.

    Editing a row breaks its own link; deleting one breaks the next row's; both are found by :func:`verify_rows`.
    """
    h = hashlib.sha256((previous or GENESIS).encode())
    h.update(json.dumps([row[c] for c in _AUDIT_COLUMNS], separators=(",", ":"), default=str).encode())
    return h.hexdigest()


def _audit_row(event: AuditEvent) -> dict[str, Any]:
    """An event as column values (the JSON fields serialised)."""
    row = {c: getattr(event, c) for c in _AUDIT_COLUMNS}
    row["output"] = json.dumps(event.output, separators=(",", ":"))
    row["alerts"] = json.dumps(event.alerts, separators=(",", ":"))
    return row


def masked_url(url: str) -> str:
    """A database URL fit for messages and logs: any password replaced by ***."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url.split("@")[-1] if "@" in url else url


def database_url(target: str | Path) -> str:
    """A SQLAlchemy URL from either a URL or a path to an SQLite file."""
    text = str(target)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


class SqlStore:
    """Keys, audit events, incidents and threat-level changes in one database."""

    def __init__(self, target: str | Path, *, synchronous: str = "NORMAL") -> None:
        if synchronous.upper() not in ("NORMAL", "FULL"):
            raise ConfigError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        self.url = database_url(target)
        self._sqlite = self.url.startswith("sqlite")
        if self._sqlite and self.url not in ("sqlite://", "sqlite:///:memory:"):
            Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine: Engine = sa.create_engine(self.url, future=True)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise ConfigError(f"cannot open the gateway database {masked_url(self.url)!r}: {exc}") from None
        if self._sqlite:
            mode = synchronous.upper()

            @sa.event.listens_for(self.engine, "connect")
            def _pragmas(conn: Any, _record: Any) -> None:
                cur = conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute(f"PRAGMA synchronous={mode}")
                cur.execute("PRAGMA busy_timeout=10000")
                cur.close()

        self._write_lock = threading.Lock()  # SQLite has one writer; queue here instead of spinning on busy
        if self._sqlite and self.url.startswith("sqlite:///"):
            _create_private(Path(self.url.removeprefix("sqlite:///")))
        try:
            from bastion.gateway.store.migrate import upgrade

            upgrade(self.engine)
        except sa.exc.OperationalError as exc:
            orig = str(exc.orig).replace(self.url, masked_url(self.url))
            raise ConfigError(f"cannot open the gateway database {masked_url(self.url)!r}: {orig}") from None
        # The two statements every request runs (find the key, append the audit event) go straight to the sqlite3
        # driver on one shared connection: SQLAlchemy's statement construction cost ~0.15 ms each, measured.
        self._fast: sqlite3.Connection | None = None
        path = self.url.removeprefix("sqlite:///")
        if self._sqlite and self.url.startswith("sqlite:///") and path != ":memory:":
            self._fast = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
            self._fast.execute("PRAGMA journal_mode=WAL")
            self._fast.execute(f"PRAGMA synchronous={synchronous.upper()}")

    def close(self) -> None:
        if self._fast is not None:
            with self._write_lock:
                self._fast.close()
                self._fast = None
        self.engine.dispose()

    def _write(self, stmt: Any) -> Any:
        with self._write_lock, self.engine.begin() as conn:
            return conn.execute(stmt)

    # keys
    def add_key(self, record: KeyRecord) -> None:
        self._write(
            KEYS.insert().values(
                key_id=record.key_id,
                name=record.name,
                scopes=",".join(record.scopes),
                secret_hash=record.secret_hash,
                created_at=record.created_at,
                revoked_at=record.revoked_at,
            )
        )

    @staticmethod
    def _key(row: Any) -> KeyRecord:
        return KeyRecord(
            key_id=row.key_id,
            name=row.name,
            scopes=tuple(s for s in row.scopes.split(",") if s),
            secret_hash=row.secret_hash,
            created_at=row.created_at,
            revoked_at=row.revoked_at,
        )

    def get_key(self, key_id: str) -> KeyRecord | None:
        if self._fast is not None:
            with self._write_lock:
                row = self._fast.execute(_GET_KEY, (key_id,)).fetchone()
            return (
                None if row is None else KeyRecord(row[0], row[1], tuple(x for x in row[2].split(",") if x), *row[3:])
            )
        with self.engine.connect() as conn:
            row = conn.execute(KEYS.select().where(KEYS.c.key_id == key_id)).first()
        return None if row is None else self._key(row)

    def list_keys(self) -> list[KeyRecord]:
        with self.engine.connect() as conn:
            return [self._key(r) for r in conn.execute(KEYS.select().order_by(KEYS.c.created_at))]

    def revoke_key(self, key_id: str, at: float) -> bool:
        stmt = KEYS.update().where(KEYS.c.key_id == key_id, KEYS.c.revoked_at.is_(None)).values(revoked_at=at)
        return bool(self._write(stmt).rowcount)

    # audit
    def append(self, event: AuditEvent) -> int:
        """Append an event, chained to the last one in the same transaction (other processes may write too)."""
        row = _audit_row(event)
        values = tuple(row[c] for c in _AUDIT_COLUMNS)
        if self._fast is not None:
            with self._write_lock:
                self._fast.execute("BEGIN IMMEDIATE")  # takes the write lock before reading the last link
                try:
                    last = self._fast.execute(_LAST_CHAIN).fetchone()
                    cur = self._fast.execute(_APPEND, (*values, chain_link(last[0] if last else None, row)))
                    self._fast.execute("COMMIT")
                except BaseException:
                    self._fast.execute("ROLLBACK")
                    raise
            return int(cur.lastrowid or 0)
        with self._write_lock, self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":  # replicas append to one chain: one writer at a time, in order
                conn.execute(sa.text("LOCK TABLE audit_events IN SHARE ROW EXCLUSIVE MODE"))
            last = conn.execute(sa.select(AUDIT.c.chain).order_by(AUDIT.c.event_id.desc()).limit(1)).first()
            row["chain"] = chain_link(last[0] if last else None, row)
            result = conn.execute(AUDIT.insert().values(**row))
            key = result.inserted_primary_key
        return int(key[0]) if key else 0

    def append_many(self, events: list[AuditEvent]) -> list[int]:
        """Append ``events`` in one transaction, each chained to the one before: one lock, one read of the last
        link and one commit for all of them (the group commit of the gateway's audit writer)."""
        if not events:
            return []
        rows = [_audit_row(e) for e in events]
        if self._fast is not None:
            ids: list[int] = []
            with self._write_lock:
                self._fast.execute("BEGIN IMMEDIATE")
                try:
                    last = self._fast.execute(_LAST_CHAIN).fetchone()
                    prev = last[0] if last else None
                    for row in rows:
                        prev = chain_link(prev, row)
                        cur = self._fast.execute(_APPEND, (*(row[c] for c in _AUDIT_COLUMNS), prev))
                        ids.append(int(cur.lastrowid or 0))
                    self._fast.execute("COMMIT")
                except BaseException:
                    self._fast.execute("ROLLBACK")
                    raise
            return ids
        with self._write_lock, self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("LOCK TABLE audit_events IN SHARE ROW EXCLUSIVE MODE"))
            last = conn.execute(sa.select(AUDIT.c.chain).order_by(AUDIT.c.event_id.desc()).limit(1)).first()
            prev = last[0] if last else None
            for row in rows:
                prev = row["chain"] = chain_link(prev, row)
            result = conn.execute(AUDIT.insert().returning(AUDIT.c.event_id, sort_by_parameter_order=True), rows)
            return [int(r[0]) for r in result]

    def _audit_rows(self, after_id: int, batch: int) -> Iterator[Any]:
        """Audit rows after ``after_id`` in event order, fetched ``batch`` at a time (one short read each)."""
        last = after_id
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    AUDIT.select().where(AUDIT.c.event_id > last).order_by(AUDIT.c.event_id).limit(batch)
                ).all()
            if not rows:
                return
            yield from rows
            last = rows[-1].event_id

    def iter_chain(self, batch: int = 1000) -> Iterator[tuple[int, dict[str, Any], str | None]]:
        """Every audit row in order as (event_id, column values as stored, chain), for verification."""
        for r in self._audit_rows(0, batch):
            m = r._mapping
            yield int(m["event_id"]), {c: m[c] for c in _AUDIT_COLUMNS}, m["chain"]

    def recent_events(self, limit: int = 100, since: float | None = None) -> list[AuditEvent]:
        """The newest ``limit`` events (newest first), optionally only those at or after ``since``."""
        q = AUDIT.select().order_by(AUDIT.c.event_id.desc()).limit(max(1, min(limit, 10_000)))
        if since is not None:
            q = q.where(AUDIT.c.time >= since)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return [self._event(r) for r in rows]

    @staticmethod
    def _event(r: Any) -> AuditEvent:
        return AuditEvent(
            time=r.time,
            request_id=r.request_id,
            key_id=r.key_id,
            model=r.model,
            input_hash=r.input_hash,
            n_inputs=r.n_inputs,
            decision=r.decision,
            status=r.status,
            latency_ms=r.latency_ms,
            output=json.loads(r.output),
            alerts=json.loads(r.alerts),
            client=r.client,
            event_id=r.event_id,
        )

    def events_between(self, since: float, until: float) -> list[AuditEvent]:
        """Events with ``since <= time < until``, oldest first (by the time index: a period's report reads only
        its period)."""
        q = AUDIT.select().where(AUDIT.c.time >= since, AUDIT.c.time < until).order_by(AUDIT.c.event_id)
        with self.engine.connect() as conn:
            return [self._event(r) for r in conn.execute(q)]

    def iter_events(self, after_id: int = 0, batch: int = 1000) -> Iterator[AuditEvent]:
        for r in self._audit_rows(after_id, batch):
            yield self._event(r)

    def count_events(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(AUDIT)).scalar_one())

    # incidents
    @staticmethod
    def _incident_values(r: IncidentRecord) -> dict[str, Any]:
        return {
            "kind": r.kind,
            "key_id": r.key_id,
            "severity": r.severity,
            "atlas": r.atlas,
            "summary": r.summary,
            "status": r.status,
            "opened_at": r.opened_at,
            "updated_at": r.updated_at,
            "alert_count": r.alert_count,
            "evidence": json.dumps(r.evidence),
            "actions": json.dumps(r.actions),
            "notes": json.dumps(r.notes),
        }

    @staticmethod
    def _incident(row: Any) -> IncidentRecord:
        return IncidentRecord(
            incident_id=row.incident_id,
            kind=row.kind,
            key_id=row.key_id,
            severity=row.severity,
            atlas=row.atlas,
            summary=row.summary,
            status=row.status,
            opened_at=row.opened_at,
            updated_at=row.updated_at,
            alert_count=row.alert_count,
            evidence=json.loads(row.evidence),
            actions=json.loads(row.actions),
            notes=json.loads(row.notes),
        )

    def add_incident(self, record: IncidentRecord) -> int:
        result = self._write(INCIDENTS.insert().values(**self._incident_values(record)))
        return int(result.inserted_primary_key[0])

    def update_incident(self, record: IncidentRecord) -> None:
        if record.incident_id is None:
            raise ValueError("update_incident needs a stored incident (incident_id is None)")
        self._write(
            INCIDENTS.update()
            .where(INCIDENTS.c.incident_id == record.incident_id)
            .values(**self._incident_values(record))
        )

    def get_incident(self, incident_id: int) -> IncidentRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(INCIDENTS.select().where(INCIDENTS.c.incident_id == incident_id)).first()
        return None if row is None else self._incident(row)

    def list_incidents(self, status: str | None = None) -> list[IncidentRecord]:
        stmt = INCIDENTS.select().order_by(INCIDENTS.c.incident_id)
        if status is not None:
            stmt = stmt.where(INCIDENTS.c.status == status)
        with self.engine.connect() as conn:
            return [self._incident(r) for r in conn.execute(stmt)]

    # threat-level changes
    def add_level_change(self, change: LevelChange) -> None:
        self._write(
            LEVELS.insert().values(
                time=change.time,
                key_id=change.key_id,
                old=change.old,
                new=change.new,
                reason=change.reason,
                actor=change.actor,
            )
        )

    def list_level_changes(self, key_id: str | None = None) -> list[LevelChange]:
        stmt = LEVELS.select().order_by(LEVELS.c.change_id)
        if key_id is not None:
            stmt = stmt.where(LEVELS.c.key_id == key_id)
        with self.engine.connect() as conn:
            return [
                LevelChange(time=r.time, key_id=r.key_id, old=r.old, new=r.new, reason=r.reason, actor=r.actor)
                for r in conn.execute(stmt)
            ]

    # threat intelligence
    def add_indicators(self, records: list[IntelRecord]) -> int:
        if not records:
            return 0
        with self._write_lock, self.engine.begin() as conn:
            known = {
                r[0] for r in conn.execute(sa.select(INTEL.c.ref).where(INTEL.c.ref.in_([r.ref for r in records])))
            }
            rows = [
                {
                    "ref": r.ref,
                    "bundle": r.bundle,
                    "source": r.source,
                    "kind": r.kind,
                    "value": r.value,
                    "scheme": None if r.scheme is None else json.dumps(r.scheme, sort_keys=True),
                    "radius": r.radius,
                    "atlas": r.atlas,
                    "imported_at": r.imported_at,
                    "valid_until": r.valid_until,
                }
                for r in records
                if r.ref not in known
            ]
            if rows:
                conn.execute(INTEL.insert(), rows)
        return len(rows)

    def list_indicators(self) -> list[IntelRecord]:
        with self.engine.connect() as conn:
            return [
                IntelRecord(
                    ref=r.ref,
                    bundle=r.bundle,
                    source=r.source,
                    kind=r.kind,
                    value=r.value,
                    atlas=r.atlas,
                    imported_at=r.imported_at,
                    scheme=None if r.scheme is None else json.loads(r.scheme),
                    radius=r.radius,
                    valid_until=r.valid_until,
                )
                for r in conn.execute(INTEL.select().order_by(INTEL.c.indicator_id))
            ]

    def remove_indicators(self, bundle: str) -> int:
        return int(self._write(INTEL.delete().where(INTEL.c.bundle == bundle)).rowcount)

    def intel_revision(self) -> tuple[int, int]:
        with self.engine.connect() as conn:
            count, top = conn.execute(sa.select(sa.func.count(), sa.func.max(INTEL.c.indicator_id))).one()
        return int(count), int(top or 0)


def _create_private(path: Path) -> None:
    """Create the SQLite file readable by its owner only; SQLite gives its -wal and -shm files the same mode."""
    if path.exists() or str(path) == ":memory:":
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def verify_rows(rows: Iterator[tuple[int, dict[str, Any], str | None]]) -> tuple[int, int, int | None]:
    """Walk the chain: (rows checked, rows older than the chain, event id of the first broken link or None)."""
    previous: str | None = None
    checked = unchained = 0
    for event_id, row, chain in rows:
        if chain is None:
            if previous is not None:
                return checked, unchained, event_id  # a row without a link after the chain began: inserted later
            unchained += 1
            continue
        if chain != chain_link(previous, row):
            return checked, unchained, event_id
        previous = chain
        checked += 1
    return checked, unchained, None
