"""Offline administration: the stores and key manager of a gateway, opened from its configuration without models.

``bastion keys``, ``bastion incidents`` and ``bastion audit`` use this, so they work on a gateway's database whether
or not the service is running (SQLite in WAL mode lets both read and write at once).
"""

from __future__ import annotations

import getpass
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bastion.errors import ConfigError, InputValidationError
from bastion.gateway.audit import AuditLog
from bastion.gateway.auth import KeyManager, load_secret
from bastion.gateway.config import GatewayConfig, load_config
from bastion.gateway.errors import GatewayError
from bastion.gateway.incidents import IncidentManager
from bastion.gateway.store.base import AuditEvent
from bastion.gateway.store.sql import SqlStore

log = logging.getLogger(__name__)


@dataclass
class AdminHandle:
    store: SqlStore
    keys: KeyManager
    incidents: IncidentManager
    audit: AuditLog

    def close(self) -> None:
        self.store.close()

    def record(self, action: str, target: str, *, status: int = 200) -> None:
        """Audit an administrative action taken from the command line, with what it acted on."""
        actor = f"cli:{getpass.getuser()}"
        self.audit.record(
            AuditEvent(
                time=time.time(),
                request_id=uuid.uuid4().hex,
                key_id=None,
                model=None,
                input_hash=None,
                n_inputs=0,
                decision=f"admin:{action}",
                status=status,
                latency_ms=0.0,
                output={"target": target, "by": actor},
                client=actor,
            )
        )


def open_store(config: GatewayConfig) -> tuple[SqlStore, bytes]:
    """The gateway's database and its key-hashing secret (checked), for the server and the admin commands alike."""
    store = SqlStore(config.database, synchronous=config.audit.synchronous)
    try:
        return store, checked_secret(Path(str(config.secret_file)), store)
    except BaseException:
        store.close()
        raise


def open_admin(config: GatewayConfig) -> AdminHandle:
    store, secret = open_store(config)
    return AdminHandle(store, KeyManager(store, secret), IncidentManager(store), AuditLog(store))


def checked_secret(path: Path, store: SqlStore) -> bytes:
    """The key-hashing secret; refuses to invent a new one when keys exist (every key would then fail), and warns
    when other users can read it."""
    if not path.exists() and store.list_keys():
        raise ConfigError(
            f"the database holds API keys but their secret file {path} is missing: a new secret would make every key "
            "fail. Restore the file (or point secret_file at it); to start over, use a new database"
        )
    secret = load_secret(path)
    mode = path.stat().st_mode
    if mode & 0o077:
        log.warning("secret file %s is readable by other users (mode %o); chmod 600 it", path, mode & 0o777)
    return secret


@contextmanager
def admin_session(config_path: str | Path) -> Iterator[AdminHandle]:
    """Open a gateway's stores from its configuration file for one CLI command, and close them afterwards.

    A refusal the HTTP API would answer with a 4xx (no such incident, already resolved) becomes a user error.
    """
    handle = open_admin(load_config(config_path))
    try:
        yield handle
    except GatewayError as exc:
        raise InputValidationError(exc.message) from None
    finally:
        handle.close()
