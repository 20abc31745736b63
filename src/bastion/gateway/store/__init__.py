"""Persistent gateway state behind small interfaces (see base.py); SQL over SQLAlchemy is the default backend."""

from __future__ import annotations

from bastion.gateway.store.base import AuditEvent, IncidentRecord, KeyRecord, LevelChange, Store
from bastion.gateway.store.sql import SqlStore, database_url

__all__ = ["AuditEvent", "IncidentRecord", "KeyRecord", "LevelChange", "SqlStore", "Store", "database_url"]
