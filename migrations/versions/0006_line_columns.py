"""Each stored record says how many columns it was rendered for: a new column voids none.

``rows.line`` keeps each row's rendered CSV record for the next exporter. It was valid for
the column count in the ``lines_format`` setting only, so a new column voided every stored
record and the exporter rendered and stored every row again: on a 1,000,000-row journal,
6–7 s before the CSV showed anything new, ~350 MB written to the WAL, and writers held up
for seconds. A row's new cells are empty, and an empty cell is only a delimiter before the
record's line break: a record of fewer columns is completed as it is read. ``line_columns``
is the count a record was stored for; NULL (every record stored before this revision) means
the count in ``lines_format``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN (no batch copy of the table): SQLite changes only the schema.
    op.add_column("rows", sa.Column("line_columns", sa.Integer, nullable=True))


def downgrade() -> None:
    # SQLite's own DROP COLUMN (3.35+): a batch copy of the table would drop the free-rows
    # triggers of 0005 with the old table.
    op.execute("ALTER TABLE rows DROP COLUMN line_columns")
