"""Keep each row's rendered CSV record, so a fresh exporter need not render every row.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL: not rendered yet, or changed since; the exporter renders and stores it.
    with op.batch_alter_table("rows") as batch:
        batch.add_column(sa.Column("line", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rows") as batch:
        batch.drop_column("line")
