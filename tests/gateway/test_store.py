"""The SQL store: every record type round-trips, on the sqlite3 fast path and on the SQLAlchemy path other databases use."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.errors import ConfigError
from bastion.gateway.store import AuditEvent, IncidentRecord, KeyRecord, LevelChange, SqlStore


@pytest.mark.parametrize("fast", [True, False])
def test_records_round_trip(tmp_path: Path, fast: bool) -> None:
    store = SqlStore(tmp_path / "s.db")
    if not fast:
        store._fast = None  # the code path a PostgreSQL URL takes
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
        inc = IncidentRecord(None, "probing", key.key_id, "critical", "AML.T0043", "s", "open", 1.0, 1.0)
        iid = store.add_incident(inc)
        store.update_incident(
            IncidentRecord(iid, "probing", key.key_id, "critical", "AML.T0043", "s", "resolved", 1.0, 2.0)
        )
        assert store.get_incident(iid).status == "resolved"  # type: ignore[union-attr]
        assert [i.incident_id for i in store.list_incidents("resolved")] == [iid] and store.list_incidents("open") == []
        store.add_level_change(LevelChange(1.0, key.key_id, "normal", "under_attack", "probing", "policy"))
        assert [c.new for c in store.list_level_changes(key.key_id)] == ["under_attack"]
    finally:
        store.close()


def test_bad_database_targets_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot open the gateway database"):
        SqlStore("nosuchdialect://x/y")
    with pytest.raises(ConfigError, match="synchronous must be"):
        SqlStore(tmp_path / "a.db", synchronous="OFF")
