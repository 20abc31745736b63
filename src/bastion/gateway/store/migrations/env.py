"""Alembic environment: migrations run on the connection the store hands over (never from a config file)."""

from __future__ import annotations

from alembic import context

from bastion.gateway.store.sql import _META

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=_META, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
