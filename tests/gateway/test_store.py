"""The SQL store: every record type round-trips, on the sqlite3 fast path and on the SQLAlchemy path other databases use."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.errors import ConfigError
from bastion.gateway.store import AuditEvent, IncidentRecord, KeyRecord, LevelChange, SqlStore
from bastion.gateway.store.base import IntelRecord


@pytest.mark.parametrize("backend", ["sqlite-fast", "sqlite", "postgresql"])
def test_records_round_trip(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    if backend == "postgresql":
        store = SqlStore(request.getfixturevalue("postgres_url"))
    else:
        store = SqlStore(tmp_path / "s.db")
        if backend == "sqlite":
            store._fast = None  # SQLAlchemy's path, as any other database takes
    try:
        key = KeyRecord("abc123abc123", "svc", ("predict:labels", "admin"), "h" * 64, 1.0)
        store.add_key(key)
        assert store.get_key("abc123abc123") == key and store.get_key("nope") is None
        assert store.revoke_key(key.key_id, 2.0) and not store.revoke_key(key.key_id, 3.0)
        assert store.get_key(key.key_id).revoked_at == 2.0  # type: ignore[union-attr]
        events = [
            AuditEvent(
                float(i), f"r{i}", key.key_id, "m", "x" * 64, i, "answered", 200, 1.5, {"labels": [i]}, [{"k": i}]
            )
            for i in range(2500)
        ]
        ids = [store.append(e) for e in events]
        assert ids == sorted(ids) and store.count_events() == 2500
        back = list(store.iter_events(after_id=ids[9]))
        assert len(back) == 2490 and back[0].request_id == "r10" and back[0].output == {"labels": [10]}
        assert back[-1].alerts == [{"k": 2499}]
        assert [e.request_id for e in store.events_between(10.0, 20.0)] == [f"r{i}" for i in range(10, 20)]
        inc = IncidentRecord(None, "probing", key.key_id, "critical", "AML.T0043", "s", "open", 1.0, 1.0)
        iid = store.add_incident(inc)
        store.update_incident(
            IncidentRecord(iid, "probing", key.key_id, "critical", "AML.T0043", "s", "resolved", 1.0, 2.0)
        )
        assert store.get_incident(iid).status == "resolved"  # type: ignore[union-attr]
        assert [i.incident_id for i in store.list_incidents("resolved")] == [iid] and store.list_incidents("open") == []
        store.add_level_change(LevelChange(1.0, key.key_id, "normal", "under_attack", "probing", "policy"))
        assert [c.new for c in store.list_level_changes(key.key_id)] == ["under_attack"]
        scheme = {"scheme": "bastion-simhash-1", "shape": [1, 8, 8], "bits": 256, "margin": 1, "grid": 16}
        intel = [
            IntelRecord("indicator--a", "b1", "Team A", "input", "ab" * 32, "AML.T0043", 5.0, scheme, 16),
            IntelRecord("indicator--b", "b1", "Team A", "client", "203.0.113.0/24", "AML.T0040", 5.0, valid_until=9.0),
        ]
        assert store.intel_revision() == (0, 0)
        assert store.add_indicators(intel) == 2 and store.add_indicators(intel[:1]) == 0  # a ref is stored once
        assert store.list_indicators() == intel and store.intel_revision()[0] == 2
        assert store.remove_indicators("b1") == 2 and store.list_indicators() == []
    finally:
        store.close()


def test_bad_database_targets_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot open the gateway database"):
        SqlStore("nosuchdialect://x/y")
    with pytest.raises(ConfigError, match="synchronous must be"):
        SqlStore(tmp_path / "a.db", synchronous="OFF")


def test_every_database_is_created_by_migrations_and_stamped(tmp_path: Path, postgres_url: str) -> None:
    from bastion.gateway.store.migrate import current, head

    for target in (tmp_path / "m.db", postgres_url):
        store = SqlStore(target)
        try:
            assert current(store.engine) == head()
        finally:
            store.close()


def test_a_database_from_before_migrations_is_upgraded_in_place(tmp_path: Path) -> None:
    """The first schema as `create_all` made it, without the audit chain column: kept, upgraded, stamped."""
    import sqlalchemy as sa

    from bastion.gateway.store.migrate import current, head

    path = tmp_path / "old.db"
    eng = sa.create_engine(f"sqlite:///{path}")
    with eng.begin() as c:
        c.execute(
            sa.text(
                "CREATE TABLE api_keys (key_id VARCHAR(32) PRIMARY KEY, name VARCHAR(200) NOT NULL, scopes VARCHAR(200) "
                "NOT NULL, secret_hash VARCHAR(128) NOT NULL, created_at FLOAT NOT NULL, revoked_at FLOAT)"
            )
        )
        c.execute(sa.text("INSERT INTO api_keys VALUES ('k1', 'old', 'admin', 'h', 1.0, NULL)"))
        c.execute(
            sa.text(
                "CREATE TABLE audit_events (event_id INTEGER PRIMARY KEY, time FLOAT NOT NULL, request_id VARCHAR(64) NOT "
                "NULL, key_id VARCHAR(32), model VARCHAR(200), input_hash VARCHAR(64), n_inputs INTEGER NOT NULL, decision "
                "VARCHAR(64) NOT NULL, status INTEGER NOT NULL, latency_ms FLOAT NOT NULL, output TEXT NOT NULL, alerts "
                "TEXT NOT NULL, client VARCHAR(100))"
            )
        )
    eng.dispose()
    store = SqlStore(path)
    try:
        assert current(store.engine) == head()
        assert store.get_key("k1") is not None and store.get_key("k1").name == "old"  # type: ignore[union-attr]
        store.append(AuditEvent(1.0, "r", "k1", None, None, 0, "admin:x", 200, 0.1))
        assert store.count_events() == 1
    finally:
        store.close()


def test_replicas_on_postgresql_share_one_gapless_audit_chain(postgres_url: str) -> None:
    """Three stores (three replicas) start at once and append concurrently: one schema, one ordered chain."""
    import threading

    from bastion.gateway.store.sql import verify_rows

    stores: list[SqlStore] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            stores.append(SqlStore(postgres_url))
        except BaseException as e:
            errors.append(e)

    starters = [threading.Thread(target=open_one) for _ in range(3)]
    for t in starters:
        t.start()
    for t in starters:
        t.join()
    assert errors == [] and len(stores) == 3

    def write(store: SqlStore, tag: int) -> None:
        for i in range(60):
            store.append(AuditEvent(float(i), f"r{tag}-{i}", None, "m", None, 1, "answered", 200, 0.1))

    writers = [threading.Thread(target=write, args=(s, n)) for n, s in enumerate(stores)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    try:
        assert stores[0].count_events() == 180
        verified, legacy, broken = verify_rows(stores[0].iter_chain())
        assert (verified, legacy, broken) == (180, 0, None)
        ids = [e.event_id for e in stores[1].iter_events(0)]
        assert ids == list(range(ids[0], ids[0] + 180))  # no gaps
    finally:
        for s in stores:
            s.close()
