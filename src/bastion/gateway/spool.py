"""What the gateway could not write to its database, kept on local disk until the database is back.

With ``database_failure.mode: serve`` (fail-open), a replica whose database is down still answers keys it verified
recently, and everything the database should have recorded — audit events, alerts for incidents, threat-level
changes — is appended here first, one JSON line each, flushed and fsynced before the answer leaves (the same
promise as an audit commit). When the database answers again the records are replayed into it in order, so the
audit chain ends up with every event; their ``time`` is when they happened, their place in the chain when they
were replayed.

Each replica writes its own file (``spool-<host>-<pid>-<random>.jsonl`` in ``spool_dir``) and holds an exclusive
``flock`` on it while it lives. A file nobody holds belongs to a replica that died before replaying it: the next
replica to start (or to drain) takes it over and replays it. Replay progress is kept in a ``.done`` file beside it
(the number of records replayed, fsynced after each), so a crash mid-replay repeats at most one record, never
loses one.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

log = logging.getLogger(__name__)


class Spool:
    """This replica's spool file, and the replay of it and of orphaned ones."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = f"spool-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        self.path = self.dir / name
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._fh: TextIO = os.fdopen(fd, "a")
        fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._lock = threading.Lock()
        self.written = 0  # records appended by this replica since it started
        self.replayed = 0  # records replayed into the database (this file's and orphans')

    def write(self, kind: str, record: dict[str, Any]) -> None:
        """Append one record durably (flushed and fsynced before this returns)."""
        line = json.dumps({"kind": kind, "record": record}, separators=(",", ":"), default=str)
        with self._lock:
            self._fh.write(line + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self.written += 1

    def pending(self) -> int:
        """Records of this replica's file not replayed yet."""
        with self._lock:
            return _count(self.path) - _done(self.path)

    def drain(self, apply: Callable[[str, dict[str, Any]], None]) -> int:
        """Replay this replica's records, then any orphaned file's, through ``apply`` (which writes one record to
        the database and raises if it cannot). Stops at the first failure, keeping its place; returns how many
        records were replayed."""
        n = 0
        with self._lock:
            n += _replay(self.path, apply)
        for other in sorted(self.dir.glob("spool-*.jsonl")):
            if other == self.path:
                continue
            try:
                fh = other.open("a")
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:  # a live replica holds it
                    continue
                n += _replay(other, apply)
                if _done(other) >= _count(other):
                    other.unlink(missing_ok=True)
                    _done_path(other).unlink(missing_ok=True)
                    log.warning("replayed the orphaned spool %s and removed it", other.name)
            finally:
                fh.close()
        self.replayed += n
        return n

    def close(self) -> None:
        """Release the file: an empty one is removed; one with records left stays for the next replica."""
        with self._lock:
            left = _count(self.path) - _done(self.path)
            self._fh.close()
            if left == 0:
                self.path.unlink(missing_ok=True)
                _done_path(self.path).unlink(missing_ok=True)
            else:
                log.error("%d records could not reach the database; kept in %s for the next replica", left, self.path)


def _done_path(path: Path) -> Path:
    return path.with_suffix(".done")


def _done(path: Path) -> int:
    try:
        return int(_done_path(path).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def _count(path: Path) -> int:
    try:
        with path.open("rb") as fh:
            return sum(1 for line in fh if line.endswith(b"\n"))
    except OSError:
        return 0


def _replay(path: Path, apply: Callable[[str, dict[str, Any]], None]) -> int:
    done = _done(path)
    n = 0
    with path.open("rb") as fh:
        for i, raw in enumerate(fh):
            if i < done or not raw.endswith(b"\n"):  # replayed before, or a line cut by a crash mid-write
                continue
            try:
                item = json.loads(raw)
            except ValueError:
                log.error("spool %s line %d is not JSON; skipped", path.name, i + 1)
            else:
                apply(str(item["kind"]), dict(item["record"]))  # raises while the database is still down
            n += 1
            marker = _done_path(path)
            tmp = marker.with_suffix(".tmp")
            with tmp.open("w") as out:
                out.write(str(i + 1))
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, marker)
    return n
