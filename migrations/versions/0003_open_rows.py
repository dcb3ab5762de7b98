"""Find open rows and expired leases through indexes: claims, pending() and recovery.

``rows.done`` is 1 for a row whose status is terminal (the writer keeps it, and a change of
the journal's terminal statuses recomputes it). ``rows_open`` indexes the rest in CSV order
with what a claim filters on, so claiming and listing pending rows never walk the rows
already done and never read the table (``done`` is in it too, or SQLite would not see the
index as covering); ``rows_free`` holds the open rows no lease
(live, expired or back-off) is on, so a claim finds the first of them without stepping over
the rows other workers hold; ``rows_leased`` finds leases to expire without a scan.

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
        "rows_open",
        "rows",
        ["pos", "lease_until", "attempts", "key", "done"],
        sqlite_where=sa.text("done = 0"),
    )
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
    op.drop_index("rows_open", "rows")
    with op.batch_alter_table("rows") as batch:
        batch.drop_column("done")
