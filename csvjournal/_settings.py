"""The journal's stored settings: key, status and timestamp columns, terminal statuses."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog
from sqlalchemy import Connection, insert, select, update

from csvjournal import _schema as t
from csvjournal.errors import SettingsError

__all__ = ["DEFAULT_STATUS", "DEFAULT_TERMINAL", "DEFAULT_TIMESTAMP", "Settings", "settle"]

log = structlog.get_logger(__name__)

DEFAULT_STATUS = "STATUS"
DEFAULT_TIMESTAMP = "LAST_PROCESSED"
DEFAULT_TERMINAL = frozenset({"COMPLETED"})


@dataclass(frozen=True, slots=True)
class Settings:
    """What a journal stores about its CSV (column order lives in the ``columns`` table)."""

    key_column: str
    status_column: str
    timestamp_column: str
    terminal: frozenset[str]


def _load(conn: Connection) -> Settings | None:
    stored = {
        name: json.loads(value)
        for name, value in conn.execute(select(t.settings.c.name, t.settings.c.value))
    }
    if "key_column" not in stored:
        return None
    return Settings(
        key_column=stored["key_column"],
        status_column=stored["status_column"],
        timestamp_column=stored["timestamp_column"],
        terminal=frozenset(stored["terminal"]),
    )


def _store(conn: Connection, values: dict[str, object], *, new: bool) -> None:
    for name, value in values.items():
        text = json.dumps(value, ensure_ascii=False)
        if new:
            conn.execute(insert(t.settings).values(name=name, value=text))
        else:
            conn.execute(update(t.settings).where(t.settings.c.name == name).values(value=text))


def _check_names(key: str, status_column: str, timestamp_column: str) -> None:
    names = [key, status_column, timestamp_column]
    if any(not name for name in names):
        raise SettingsError("key, status and timestamp column names must not be empty")
    if len(set(names)) != 3:
        raise SettingsError(f"key, status and timestamp columns must differ: {names}")


def settle(
    conn: Connection,
    path: Path,
    *,
    key: str | None,
    terminal: Iterable[str] | None,
    status_column: str,
    timestamp_column: str,
) -> Settings:
    """Return the journal's settings, creating them for a new journal (in ``conn``'s write
    transaction) or reconciling the ``open()`` arguments with the stored ones.

    Raises:
        SettingsError: a new journal without ``key``, or arguments that contradict the
            stored settings.
    """
    stored = _load(conn)
    wanted_terminal = frozenset(terminal) if terminal is not None else None
    if stored is None:
        if key is None:
            raise SettingsError(f"{path}: key= is required to create a journal")
        _check_names(key, status_column, timestamp_column)
        created = Settings(
            key, status_column, timestamp_column, wanted_terminal or DEFAULT_TERMINAL
        )
        _store(
            conn,
            {
                "key_column": key,
                "status_column": status_column,
                "timestamp_column": timestamp_column,
                "terminal": sorted(created.terminal),
            },
            new=True,
        )
        for pos, name in enumerate((key, status_column, timestamp_column)):
            conn.execute(insert(t.columns).values(pos=pos, name=name))
        log.info("journal_created", path=str(path), key_column=key)
        return created
    for given, default, have, what in (
        (key, None, stored.key_column, "key"),
        (status_column, DEFAULT_STATUS, stored.status_column, "status_column"),
        (timestamp_column, DEFAULT_TIMESTAMP, stored.timestamp_column, "timestamp_column"),
    ):
        if given is not None and given not in (default, have):
            raise SettingsError(f"{path}: {what}={given!r} conflicts with the journal's {have!r}")
    if wanted_terminal is not None and wanted_terminal != stored.terminal:
        _store(conn, {"terminal": sorted(wanted_terminal)}, new=False)
        log.info(
            "terminal_statuses_replaced",
            path=str(path),
            old=sorted(stored.terminal),
            new=sorted(wanted_terminal),
        )
        return Settings(
            stored.key_column, stored.status_column, stored.timestamp_column, wanted_terminal
        )
    return stored
