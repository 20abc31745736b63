"""Group commit: events appended in one transaction keep their order and the chain; the writer thread batches the
events of concurrent requests and hands each its own id; a failed commit reaches every waiting request."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from bastion.gateway.group_commit import AuditWriter
from bastion.gateway.store import AuditEvent, SqlStore
from bastion.gateway.store.sql import verify_rows


def _event(tag: str, i: int) -> AuditEvent:
    return AuditEvent(float(i), f"{tag}-{i}", None, "m", None, 1, "answered", 200, 0.1, {"i": i})


@pytest.mark.parametrize("backend", ["sqlite-fast", "sqlite", "postgresql"])
def test_append_many_keeps_order_ids_and_the_chain(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    store = (
        SqlStore(request.getfixturevalue("postgres_url")) if backend == "postgresql" else SqlStore(tmp_path / "s.db")
    )
    if backend == "sqlite":
        store._fast = None
    try:
        store.append(_event("one", 0))
        ids = store.append_many([_event("many", i) for i in range(5)])
        assert store.append_many([]) == []
        assert ids == list(range(ids[0], ids[0] + 5))
        events = list(store.iter_events(0))
        assert [e.request_id for e in events] == ["one-0", *(f"many-{i}" for i in range(5))]
        assert [e.event_id for e in events[1:]] == ids
        assert verify_rows(store.iter_chain()) == (6, 0, None)
    finally:
        store.close()


def test_the_writer_batches_concurrent_requests_and_answers_each(postgres_url: str) -> None:
    store = SqlStore(postgres_url)
    writer = AuditWriter(store)
    got: dict[str, int] = {}
    lock = threading.Lock()

    def request(tag: int) -> None:
        for i in range(40):
            event = _event(f"t{tag}", i)
            event_id = writer.submit(event).result(timeout=30)
            with lock:
                got[event.request_id] = event_id

    threads = [threading.Thread(target=request, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    try:
        stored = {e.request_id: e.event_id for e in store.iter_events(0)}
        assert stored == got and len(got) == 320  # each request got its own event's id
        assert writer.events == 320 and writer.batches < 320  # some commits carried several requests
        assert verify_rows(store.iter_chain()) == (320, 0, None)
    finally:
        store.close()


def test_a_failed_commit_reaches_every_waiting_request(postgres_url: str) -> None:
    """The database is dropped under the writer (a real failure): every queued request gets the error."""
    import sqlalchemy as sa
    from tests.conftest import POSTGRES_ADMIN_URL

    store = SqlStore(postgres_url)
    writer = AuditWriter(store)
    assert writer.submit(_event("ok", 0)).result(timeout=30) > 0
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE "{postgres_url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    admin.dispose()
    futures = [writer.submit(_event("x", i)) for i in range(5)]
    for f in futures:
        with pytest.raises(sa.exc.OperationalError):
            f.result(timeout=30)
    writer.close()
    store.close()
