"""Creating and upgrading the journal schema with alembic, on the caller's connection.

alembic is imported only to migrate: the revisions this csvjournal knows are listed here too
(a test keeps the list equal to the migration scripts), so opening a current journal, which
every worker process does, costs no alembic import (a third of a second).
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, text

from csvjournal.errors import SchemaTooNewError, SettingsError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

__all__ = [
    "KNOWN_REVISIONS",
    "check_file",
    "check_revision",
    "current_revision",
    "head_revision",
    "upgrade",
]

# Every revision in migrations/versions, oldest first.
KNOWN_REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006")

# alembic keeps the running migration's context in module globals (``alembic.context``,
# ``alembic.op``): two journals created or upgraded at once by two threads would share it.
_ONE_AT_A_TIME = threading.Lock()


def _script_location() -> Path:
    # A wheel carries the migrations inside the package (hatchling force-include); a
    # source checkout or editable install keeps them at the top level of the repository.
    here = Path(__file__).resolve().parent
    for candidate in (here / "_migrations", here.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise RuntimeError(f"csvjournal migrations not found beside {here}")  # broken install


@functools.cache
def _config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_script_location()))
    return cfg


@functools.cache
def _script() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config())


def script_revisions() -> list[str]:
    """The revisions of the migration scripts, oldest first (what alembic sees)."""
    return [script.revision for script in reversed(list(_script().walk_revisions()))]


def head_revision() -> str:
    """Return the newest schema revision this csvjournal knows."""
    return KNOWN_REVISIONS[-1]


def _known(revision: str) -> bool:
    return revision in KNOWN_REVISIONS


def check_revision(revision: str | None, tables: list[str], path: Path) -> None:
    """Refuse a database that is not a journal of a schema this csvjournal knows.

    Raises:
        SchemaTooNewError: the revision is unknown, i.e. written by a newer csvjournal.
        SettingsError: the database has tables but is not a csvjournal journal.
    """
    if revision is None:
        if tables:
            raise SettingsError(f"{path}: this SQLite database is not a csvjournal journal")
        return
    if not _known(revision):
        raise SchemaTooNewError(
            f"{path}: journal schema revision {revision!r} was written by a newer csvjournal"
            f" (this one knows up to {head_revision()!r}); upgrade csvjournal to open it"
        )


def check_file(conn: sqlite3.Connection, path: Path) -> list[str]:
    """Refuse the database ``conn`` reads unless it is empty or a journal of a schema this
    csvjournal knows (see :func:`check_revision`); return its tables.

    Raises:
        SchemaTooNewError: written by a newer csvjournal.
        SettingsError: not a csvjournal journal.
    """
    tables = [
        name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    ]
    revision = None
    if "alembic_version" in tables:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        revision = None if row is None else str(row[0])
    check_revision(revision, tables, path)
    return tables


def current_revision(conn: Connection) -> str | None:
    """The journal's schema revision, ``None`` for an empty database."""
    found = conn.execute(
        text("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'")
    ).first()
    if found is None:
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(conn: Connection) -> None:
    """Upgrade the schema to the head revision inside the caller's open transaction."""
    from alembic import command
    from alembic.config import Config

    cfg = Config(attributes={"connection": conn})
    cfg.set_main_option("script_location", str(_script_location()))
    with _ONE_AT_A_TIME:
        command.upgrade(cfg, "head")
