"""Find open rows and expired leases through indexes: claims, pending() and recovery.

``rows.done`` is 1 for a row whose status is terminal (the writer keeps it, and a change of
the journal's terminal statuses recomputes it). An open row (not done) is *free* when no lease
is on it and *lapsed* when its lease (or retry back-off) ran out. ``rows_free`` indexes the
free rows in CSV order with what a claim filters on (covering: ``done`` and ``lease_until``
are in it too, or SQLite would read the table), so claims and ``pending()`` never walk the
rows done or held; ``rows_leased`` finds the lapsed ones, and leases to expire, by time.
Each index costs SQLite's integrity check a pass over it, hence only these two.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("rows", sa.Column("done", sa.Integer, nullable=False, server_default="0"))
    stored = op.get_bind().execute(sa.text("SELECT value FROM settings WHERE name = 'terminal'"))
    terminal = json.loads(stored.scalar() or "[]")
    if terminal:
        rows = sa.table("rows", sa.column("status"), sa.column("done"))
        op.execute(rows.update().where(rows.c.status.in_(terminal)).values(done=1))
    op.create_index(
        "rows_free",
        "rows",
        ["pos", "attempts", "key", "done", "lease_until"],
        sqlite_where=sa.text("done = 0 AND lease_until IS NULL"),
    )
    op.create_index(
        "rows_leased", "rows", ["lease_until"], sqlite_where=sa.text("lease_until IS NOT NULL")
    )


def downgrade() -> None:
    op.drop_index("rows_leased", "rows")
    op.drop_index("rows_free", "rows")
    with op.batch_alter_table("rows") as batch:
        batch.drop_column("done")
