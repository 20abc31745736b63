"""Threat intelligence: indicators imported from STIX bundles (fingerprints of hostile inputs, client addresses).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "intel_indicators",
        sa.Column("indicator_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ref", sa.String(200), nullable=False, unique=True),
        sa.Column("bundle", sa.String(64), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("scheme", sa.Text, nullable=True),
        sa.Column("radius", sa.Integer, nullable=True),
        sa.Column("atlas", sa.String(40), nullable=False),
        sa.Column("imported_at", sa.Float, nullable=False),
        sa.Column("valid_until", sa.Float, nullable=True),
    )
    op.create_index("ix_intel_indicators_bundle", "intel_indicators", ["bundle"])


def downgrade() -> None:
    op.drop_index("ix_intel_indicators_bundle", "intel_indicators")
    op.drop_table("intel_indicators")
