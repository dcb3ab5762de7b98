"""Alembic environment for the csvjournal journal schema.

The package runs migrations programmatically and passes its own connection (already inside
a ``BEGIN IMMEDIATE`` transaction) in ``config.attributes["connection"]``. Developers running
the ``alembic`` command use ``sqlalchemy.url`` from ``alembic.ini`` instead.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

config = context.config
shared = config.attributes.get("connection")

if shared is not None:
    context.configure(connection=shared, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set sqlalchemy.url in alembic.ini or pass -x url=...")
    engine = create_engine(url)
    with engine.begin() as connection:
        context.configure(connection=connection, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
