"""The first journal schema: settings, columns, rows and events.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "settings",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "columns",
        sa.Column("pos", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.Text, nullable=False, unique=True),
    )
    op.create_table(
        "rows",
        sa.Column("pos", sa.Integer, primary_key=True),
        sa.Column("key", sa.Text, nullable=False, unique=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("cells", sa.Text, nullable=False),
        sa.Column("seqs", sa.Text, nullable=False, server_default="[]"),
        sa.Column("lease_until", sa.Float),
        sa.Column("holder", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "events",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("fields", sa.Text, nullable=False),
        sa.Column("at", sa.Text, nullable=False),
        sa.Column("worker", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("note", sa.Text),
    )


def downgrade() -> None:
    for table in ("events", "rows", "columns", "settings"):
        op.drop_table(table)
