"""Offline administration: the stores and key manager of a gateway, opened from its configuration without models.

``bastion keys``, ``bastion incidents`` and ``bastion audit`` use this, so they work on a gateway's database whether
or not the service is running (SQLite in WAL mode lets both read and write at once).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bastion.errors import InputValidationError
from bastion.gateway.audit import AuditLog
from bastion.gateway.auth import KeyManager, load_secret
from bastion.gateway.config import GatewayConfig, load_config
from bastion.gateway.errors import GatewayError
from bastion.gateway.incidents import IncidentManager
from bastion.gateway.store.sql import SqlStore


@dataclass
class AdminHandle:
    store: SqlStore
    keys: KeyManager
    incidents: IncidentManager
    audit: AuditLog

    def close(self) -> None:
        self.store.close()


def open_admin(config: GatewayConfig) -> AdminHandle:
    store = SqlStore(config.database, synchronous=config.audit.synchronous)
    secret = load_secret(Path(str(config.secret_file)))
    return AdminHandle(store, KeyManager(store, secret), IncidentManager(store), AuditLog(store))


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
