"""Schema migrations with Alembic, from the first version: every store opens its database through :func:`upgrade`.

A database made before migrations existed (tables, no ``alembic_version``) is brought to the first revision's
shape and stamped, then upgraded like any other. On PostgreSQL several replicas may start at once: the upgrade runs
under an advisory lock, so exactly one applies each revision and the others find it done.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

MIGRATIONS = Path(__file__).parent / "migrations"
FIRST = "0001"
_LOCK = 0x42A57104  # pg_advisory_xact_lock key for the gateway's schema upgrades


def _config(connection: Connection) -> object:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision this Bastion knows."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return str(ScriptDirectory.from_config(cfg).get_current_head())


def current(engine: Engine) -> str | None:
    """The revision a database is at (None before any migration)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Bring the database behind ``engine`` to the newest revision (creating it on first use)."""
    from alembic import command

    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK})
        inspector = sa.inspect(conn)
        cfg = _config(conn)
        if inspector.has_table("api_keys") and not inspector.has_table("alembic_version"):
            columns = {c["name"] for c in inspector.get_columns("audit_events")}
            if "chain" not in columns:  # the one change made before migrations existed
                conn.execute(sa.text("ALTER TABLE audit_events ADD COLUMN chain VARCHAR(64)"))
            command.stamp(cfg, FIRST)  # type: ignore[arg-type]
        command.upgrade(cfg, "head")  # type: ignore[arg-type]
