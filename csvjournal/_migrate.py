"""Creating and upgrading the journal schema with alembic, on the caller's connection."""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from csvjournal.errors import SchemaTooNewError, SettingsError

__all__ = ["check_revision", "current_revision", "head_revision", "upgrade"]


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
    cfg = Config()
    cfg.set_main_option("script_location", str(_script_location()))
    return cfg


@functools.cache
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head_revision() -> str:
    """Return the newest schema revision this csvjournal knows."""
    head = _script().get_current_head()
    assert head is not None, "the migrations have exactly one head"
    return head


def _known(revision: str) -> bool:
    return any(script.revision == revision for script in _script().walk_revisions())


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


def current_revision(conn: Connection) -> str | None:
    """The journal's schema revision, ``None`` for an empty database."""
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(conn: Connection) -> None:
    """Upgrade the schema to the head revision inside the caller's open transaction."""
    cfg = Config(attributes={"connection": conn})
    cfg.set_main_option("script_location", str(_script_location()))
    command.upgrade(cfg, "head")
