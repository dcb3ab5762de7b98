"""The journal's stored settings: key, status and timestamp columns, terminal statuses."""

from __future__ import annotations

import codecs
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import structlog
from sqlalchemy import Connection, delete, insert, select, update

from csvjournal import _schema as t
from csvjournal import _twins as twins
from csvjournal._csvbytes import writing_encoding
from csvjournal._options import Options
from csvjournal.csvio import GUARD_RULES, CsvDialect, ParsedCsv
from csvjournal.errors import SettingsError

__all__ = [
    "DEFAULT_STATUS",
    "DEFAULT_TERMINAL",
    "DEFAULT_TIMESTAMP",
    "Settings",
    "forget_values",
    "read_value",
    "settle",
    "stored_guard",
    "write_value",
]

log = structlog.get_logger(__name__)


class _Default(str):
    """A column name ``open()`` was not given: the journal's own name, whatever it is, for a
    journal that exists. A name given, even the same text, must match the journal's."""

    __slots__ = ()


def _given(name: str) -> str:
    """``name`` without the mark of a default (any other value as it came: ``str()`` would
    write an enum member's name, or None's, as the column's)."""
    return str.__str__(name) if isinstance(name, _Default) else name


DEFAULT_STATUS: str = _Default("STATUS")
DEFAULT_TIMESTAMP: str = _Default("LAST_PROCESSED")
DEFAULT_TERMINAL = frozenset({"COMPLETED"})


@dataclass(frozen=True, slots=True)
class Settings:
    """What a journal stores about its CSV (column order lives in the ``columns`` table)."""

    key_column: str
    status_column: str
    timestamp_column: str
    terminal: frozenset[str]
    dialect: CsvDialect
    # Stored, so that every exporter of the journal (another process, the CLI) guards alike.
    formula_guard: bool = False
    # Not stored: the guard's rules a sheet was written with, as a merge reads it
    guard_rules: int = GUARD_RULES


def _load(conn: Connection) -> Settings | None:
    try:
        return _decode(conn)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        # SQLite read the pages, but what they hold is no journal's settings any more:
        # damage, as SQLite reports it (the handle then names the backup to restore)
        what = f"no {exc.args[0]!r} setting" if isinstance(exc, KeyError) else str(exc)
        damaged = sqlite3.DatabaseError(f"database disk image is malformed (settings: {what})")
        damaged.sqlite_errorcode = 11  # SQLITE_CORRUPT
        raise damaged from exc


def _decode(conn: Connection) -> Settings | None:
    stored = {
        name: json.loads(value)
        for name, value in conn.execute(select(t.settings.c.name, t.settings.c.value))
    }
    if not stored:  # a new journal, unless its columns say it was made (then: damage)
        if conn.execute(select(t.columns.c.pos).limit(1)).first() is not None:
            raise KeyError("key_column")
        return None
    return Settings(
        key_column=stored["key_column"],
        status_column=stored["status_column"],
        timestamp_column=stored["timestamp_column"],
        terminal=frozenset(stored["terminal"]),
        dialect=CsvDialect.from_dict(stored["dialect"]),
        formula_guard=bool(stored.get("formula_guard", False)),
    )


def _store(conn: Connection, values: dict[str, object], *, new: bool) -> None:
    for name, value in values.items():
        text = json.dumps(value, ensure_ascii=False)
        if new:
            conn.execute(insert(t.settings).values(name=name, value=text))
        else:
            conn.execute(update(t.settings).where(t.settings.c.name == name).values(value=text))


def read_value(conn: Connection, name: str) -> object:
    """A stored setting outside :class:`Settings` (e.g. the exporter's state), or None."""
    row = t.driver(conn).execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
    return None if row is None else json.loads(row[0])


def stored_guard(conn: Connection) -> bool:
    """The formula guard as the journal stores it now (another open may have changed it
    since this handle's)."""
    return read_value(conn, "formula_guard") is True


_UPSERT_VALUE = """
INSERT INTO settings (name, value) VALUES (?, ?)
ON CONFLICT (name) DO UPDATE SET value = excluded.value
"""


def write_value(conn: Connection, name: str, value: object) -> None:
    """Store a setting outside :class:`Settings` (inside ``conn``'s write transaction)."""
    t.driver(conn).execute(_UPSERT_VALUE, (name, json.dumps(value, ensure_ascii=False)))


def forget_values(conn: Connection, *names: str) -> None:
    """Remove stored settings written by :func:`write_value` (inside ``conn``'s write
    transaction); a name never stored is ignored."""
    conn.execute(delete(t.settings).where(t.settings.c.name.in_(names)))


def _check_names(key: str, status_column: str, timestamp_column: str) -> None:
    names = [key, status_column, timestamp_column]
    if any(not name for name in names):
        raise SettingsError("key, status and timestamp column names must not be empty")
    if len(set(names)) != 3:
        raise SettingsError(f"key, status and timestamp columns must differ: {names}")


def _check_writable(columns: list[str], encoding: str, path: Path) -> None:
    """Refuse a new journal's column the CSV's encoding cannot write (a journal made
    without a CSV, in ``encoding=``): it would stop every export of the CSV for good.
    (The columns of an imported CSV are checked before the journal exists.)"""
    for name in columns:
        try:
            name.encode(encoding)
        except UnicodeEncodeError as exc:
            raise SettingsError(
                f"{path}: the CSV's encoding ({encoding}) cannot write"
                f" {name[exc.start : exc.end]!r} of the column {name!r}; name it in"
                " characters the encoding has"
            ) from None


def _columns_for(
    source: ParsedCsv | None, key: str, status_column: str, timestamp_column: str
) -> list[str]:
    # The caller checked the source's keys (the key column is there) before creating
    # anything, with _importer.check_keys.
    if source is None:
        return [key, status_column, timestamp_column]
    extra = [name for name in (status_column, timestamp_column) if name not in source.header]
    return [*source.header, *extra]


def _new_dialect(encoding: str | None) -> CsvDialect:
    """The dialect of a journal made without a CSV: the default one, in ``encoding``."""
    return CsvDialect() if encoding is None else CsvDialect(encoding=writing_encoding(encoding))


def settle(
    conn: Connection,
    options: Options,
    source: ParsedCsv | None = None,
    *,
    before_change: Callable[[Connection], object] | None = None,
) -> tuple[Settings, list[str] | None]:
    """Return the journal's settings, creating them for a new journal (in ``conn``'s write
    transaction) or reconciling the ``open()`` arguments with the stored ones (calling
    ``before_change(conn)`` first when they change the stored ones: it may refuse). For a
    new journal also return its columns (from ``source``, the CSV being imported, if any).

    Raises:
        SettingsError: a new journal without ``key``, or arguments that contradict the
            stored settings.
    """
    path, key, wanted_terminal = options.journal_path, options.key, options.terminal
    status_column = _given(options.status_column)
    timestamp_column = _given(options.timestamp_column)
    stored = _load(conn)
    if stored is None:
        if key is None:
            raise SettingsError(f"{path}: key= is required to create a journal")
        _check_names(key, status_column, timestamp_column)
        columns = _columns_for(source, key, status_column, timestamp_column)
        dialect = source.dialect if source is not None else _new_dialect(options.encoding)
        _check_writable(columns, dialect.encoding, path)
        created = Settings(
            key,
            status_column,
            timestamp_column,
            wanted_terminal or DEFAULT_TERMINAL,
            dialect,
            bool(options.formula_guard),
        )
        _create(conn, created, columns)
        log.info("journal_created", path=str(path), key_column=key)
        return created, columns
    _check_against(stored, options)
    guard = options.formula_guard
    changing = wanted_terminal is not None and wanted_terminal != stored.terminal
    if guard and not stored.formula_guard:  # refused before the backup: nothing changes
        twins.check_journal(t.driver(conn), path)
    if before_change is not None and (
        changing or (guard is not None and guard != stored.formula_guard)
    ):
        before_change(conn)
    if wanted_terminal is not None and wanted_terminal != stored.terminal:
        _replace_terminal(conn, wanted_terminal)
        log.info(
            "terminal_statuses_replaced",
            path=str(path),
            old=sorted(stored.terminal),
            new=sorted(wanted_terminal),
        )
        stored = replace(stored, terminal=wanted_terminal)
    if guard is not None and guard != stored.formula_guard:
        write_value(conn, "formula_guard", guard)
        log.info("formula_guard_changed", path=str(path), formula_guard=guard)
        stored = replace(stored, formula_guard=guard)
    return stored, None


def settled(conn: Connection, options: Options) -> Settings | None:
    """The journal's settings if opening it with these arguments writes nothing (it exists
    and ``terminal`` is not a new set); else None: call :func:`settle` in a write
    transaction. Needs only a read transaction, so an open that changes nothing never
    waits for the journal's writers.

    Raises:
        SettingsError: arguments that contradict the stored settings.
    """
    stored = _load(conn)
    if stored is None:
        return None
    _check_against(stored, options)
    if options.terminal is not None and options.terminal != stored.terminal:
        return None
    if options.formula_guard is not None and options.formula_guard != stored.formula_guard:
        return None
    return stored


def refuse_conflicts(conn: Connection, options: Options) -> None:
    """Refuse arguments that contradict the journal's stored settings, reading only the
    settings table (the same in every schema revision: fit to run before an upgrade).

    Raises:
        SettingsError: an argument contradicts a stored setting.
    """
    stored = _load(conn)
    if stored is not None:
        _refuse_conflicts(stored, options)


def _check_against(stored: Settings, options: Options) -> None:
    _refuse_conflicts(stored, options)
    _warn_encoding(stored, options)


def _refuse_conflicts(stored: Settings, options: Options) -> None:
    for given, have, what in (
        (options.key, stored.key_column, "key"),
        (options.status_column, stored.status_column, "status_column"),
        (options.timestamp_column, stored.timestamp_column, "timestamp_column"),
    ):
        if given is not None and not isinstance(given, _Default) and given != have:
            raise SettingsError(
                f"{options.journal_path}: {what}={given!r} conflicts with the journal's {have!r}"
            )


def _warn_encoding(stored: Settings, options: Options) -> None:
    wanted, stored_encoding = options.encoding, stored.dialect.encoding
    if wanted is not None and _codec(wanted) != _codec(stored_encoding):
        # The file was imported in its encoding, and is written in it: said, not an error
        # (a script passing --encoding at every run of a job created with it).
        log.warning(
            "encoding_ignored",
            path=str(options.journal_path),
            given=wanted,
            stored=stored_encoding,
        )


def _codec(name: str) -> str:
    """An encoding's canonical name; a BOM is the dialect's business, not the codec's."""
    canonical = codecs.lookup(name).name
    return "utf-8" if canonical == "utf-8-sig" else canonical


def _create(conn: Connection, settings: Settings, columns: list[str]) -> None:
    """Store a new journal's settings and its columns."""
    _store(
        conn,
        {
            "key_column": settings.key_column,
            "status_column": settings.status_column,
            "timestamp_column": settings.timestamp_column,
            "terminal": sorted(settings.terminal),
            "dialect": settings.dialect.to_dict(),
            "formula_guard": settings.formula_guard,
        },
        new=True,
    )
    conn.execute(insert(t.columns), [{"pos": i, "name": n} for i, n in enumerate(columns)])


def _replace_terminal(conn: Connection, terminal: frozenset[str]) -> None:
    """Store a new set of terminal statuses and set each row's ``done`` flag by it."""
    _store(conn, {"terminal": sorted(terminal)}, new=False)
    done = t.rows.c.status.in_(sorted(terminal))
    # Only the rows whose flag changes: rewriting the others would cost seconds on a
    # million rows (and fire free_rows' triggers for each).
    conn.execute(update(t.rows).where(t.rows.c.done != done).values(done=done))
