"""The fail-open spool: records survive until the database takes them, replay resumes where it stopped, a dead
replica's file is taken over, a live replica's is left alone."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import pytest

from bastion.gateway.spool import Spool


def test_records_replay_in_order_and_a_failure_keeps_the_place(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for i in range(5):
        spool.write("audit", {"n": i})
    assert spool.pending() == 5 and spool.path.stat().st_mode & 0o777 == 0o600
    got: list[int] = []

    def flaky(kind: str, record: dict) -> None:  # type: ignore[type-arg]
        if record["n"] == 3 and not got.count(-1):
            got.append(-1)
            raise ConnectionError("database still down")
        got.append(record["n"])

    with pytest.raises(ConnectionError):
        spool.drain(flaky)
    assert spool.pending() == 2  # 0, 1, 2 are in; 3 failed and stays first
    assert spool.drain(flaky) == 2 and spool.pending() == 0
    assert [g for g in got if g >= 0] == [0, 1, 2, 3, 4]  # each once, in order
    spool.close()
    assert not spool.path.exists()  # nothing left: the file goes


def test_a_dead_replicas_file_is_taken_over_and_a_live_ones_is_not(tmp_path: Path) -> None:
    orphan = tmp_path / "spool-deadhost-1-abc.jsonl"
    orphan.write_text(json.dumps({"kind": "audit", "record": {"n": 7}}) + "\n" + '{"kind": "audit", "rec')  # cut
    live = Spool(tmp_path)
    live.write("audit", {"n": 1})
    other = Spool(tmp_path)  # a second live replica: holds its own file
    other.write("audit", {"n": 2})
    seen: list[int] = []
    assert live.drain(lambda k, r: seen.append(r["n"])) == 2  # its own, then the orphan's one whole line
    assert seen == [1, 7] and not orphan.exists()
    assert other.path.exists() and other.pending() == 1  # not taken: its replica holds the lock
    with other.path.open("a") as fh, pytest.raises(OSError):
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    other.close()  # closed with a record left: the file stays for the next replica
    assert other.path.exists()
    assert live.drain(lambda k, r: seen.append(r["n"])) == 1 and seen[-1] == 2 and not other.path.exists()
    live.close()
