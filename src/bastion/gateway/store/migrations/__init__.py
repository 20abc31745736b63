"""Alembic migrations of the gateway database (keys, audit events, incidents, threat-level changes)."""
