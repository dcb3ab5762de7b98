"""Importing a CSV into a new journal: one transaction, every value kept as text."""

from __future__ import annotations

import difflib
import sqlite3
from collections.abc import Iterator
from json.encoder import encode_basestring_ascii as _quote  # C
from pathlib import Path

import structlog
from sqlalchemy import Connection

from csvjournal._migrate import check_file
from csvjournal._schema import driver, peek
from csvjournal._settings import Settings, write_value
from csvjournal._twins import check_import
from csvjournal._writer import PENDING
from csvjournal.csvio import EXCEL_MAX_CELL, ParsedCsv
from csvjournal.errors import CsvFormatError, SettingsError

__all__ = ["check_keys", "check_own_columns", "import_rows", "listed", "unfinished"]

log = structlog.get_logger(__name__)


def unfinished(journal_path: Path) -> bool:
    """Whether the journal at ``journal_path`` was never finished: its creation (the schema,
    then the settings with the import, two transactions) was killed, or cut off by a power
    loss, before the second committed. Opened as it is, it would be an empty journal, and
    its exporter would write the CSV's rows away; it must import the CSV again instead.
    Read-only: a journal refused here is left as it was, its hot WAL too.

    Raises:
        SchemaTooNewError: the journal was written by a newer csvjournal.
        SettingsError: the file is not a csvjournal journal.
    """
    try:
        with peek(journal_path) as conn:
            tables = check_file(conn, journal_path)
            if not tables:
                return True  # the file was made, its schema never committed
            if "settings" not in tables or "columns" not in tables:
                return False  # damaged: the store says so
            # Settings and columns commit together: one without the other is damage.
            (found,) = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM settings) OR EXISTS (SELECT 1 FROM columns)"
            ).fetchone()
            return not found
    except sqlite3.Error:
        return False


def listed(names: list[str], most: int = 10) -> str:
    """Up to ``most`` names, as Python writes them (a name may hold a comma or a space)."""
    shown = ", ".join(repr(name) for name in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _near_miss(key: str, header: list[str]) -> str:
    """A header name that is ``key`` but for case, spaces or a stray BOM; else one close
    to it; as a question, or nothing."""

    def plain(name: str) -> str:
        return name.strip().lstrip("\ufeff").strip().casefold()

    if header and header[0].startswith(_UTF8_BOM_MISREAD):  # (given --encoding cp1252, say)
        return (
            "; the file starts with UTF-8's byte-order mark, read in another encoding:"
            " it is UTF-8 (give no encoding)"
        )
    names = {plain(name): name for name in reversed(header)}  # the first of equals wins
    near = difflib.get_close_matches(plain(key), list(names), n=1, cutoff=0.75)
    return f"; did you mean {names[near[0]]!r}?" if near else ""


# UTF-8's byte-order mark read as cp1252 or Latin-1 (the encodings a sheet is often given)
_UTF8_BOM_MISREAD = ("\u00ef\u00bb\u00bf",)


def check_own_columns(path: Path, parsed: ParsedCsv, columns: list[str]) -> None:
    """Refuse a header whose name is one of csvjournal's ``columns`` (status, timestamp)
    but for spaces around it (``ID, NAME, STATUS``): the journal would add the column a
    second time beside it; and a name of those the header lacks that the CSV's encoding
    cannot write: added, it would stop every export of the CSV for good.

    Raises:
        CsvFormatError: the name, at its line and column.
        SettingsError: a column name the CSV's encoding cannot write.
    """
    encoding = parsed.dialect.encoding
    for name in columns:
        if name in parsed.header:
            continue
        try:
            name.encode(encoding)
        except UnicodeEncodeError as exc:
            raise SettingsError(
                f"{path}: the column {name!r} would be added, but the CSV's encoding"
                f" ({encoding}) cannot write {name[exc.start : exc.end]!r}; name it in"
                " characters the encoding has"
            ) from None
    for index, name in enumerate(parsed.header):
        plain = name.strip()
        if plain != name and plain in columns and plain not in parsed.header:
            line, column = parsed.header_place(index)
            raise CsvFormatError(
                f"{path}: line {line}, column {column}: header name {name!r} is {plain!r}"
                " with spaces around it: the journal would add a second column"
                f" {plain!r}; take the spaces out of the header"
            )


def check_keys(path: Path, parsed: ParsedCsv, key: str, *, formula_guard: bool = False) -> None:
    """Refuse a CSV whose key column is missing, or has an empty or a repeated key; with
    ``formula_guard``, also two keys or header names that the guard would show alike
    (``=A`` and ``'=A``).

    Raises:
        CsvFormatError: naming the file and the lines.
    """
    if key not in parsed.header:
        raise CsvFormatError(
            f"{path}: line 1, column 1: no key column {key!r} in the header"
            f" ({listed(parsed.header)}){_near_miss(key, parsed.header)}"
        )
    index = parsed.header.index(key)
    seen: set[str] = set()  # the keys alone: their lines are looked up for an error only
    for line, record in parsed.records():
        value = record[index]
        if not value:
            at, column = parsed.place(line, index)
            raise CsvFormatError(f"{path}: line {at}, column {column}: empty key ({key!r})")
        if value in seen:
            first = next(at for at, other in parsed.records() if other[index] == value)
            at, column = parsed.place(line, index)
            raise CsvFormatError(
                f"{path}: line {at}, column {column}: duplicate key {value!r} in {key!r}"
                f" (first on line {parsed.place(first, index)[0]})"
            )
        seen.add(value)
    if formula_guard:
        check_import(path, parsed, key, seen)


def import_rows(
    conn: Connection, parsed: ParsedCsv, settings: Settings, columns: list[str]
) -> None:
    """Insert every row of ``parsed`` in CSV order inside ``conn``'s write transaction.

    Cells stay as written: a row with an empty status cell counts as ``PENDING`` (its
    status) while its cell stays empty until a record sets the status. Only a status column
    the CSV lacks, appended at import, shows ``PENDING``.
    """
    raw = driver(conn)
    header = parsed.header
    key_index = header.index(settings.key_column)
    status_cell = str(columns.index(settings.status_column))
    status_index = header.index(settings.status_column) if settings.status_column in header else -1
    # The cells' JSON, compact (every byte of a row is read again by each integrity
    # check), made as the writer makes it: json.dumps of a dict costs twice as much.
    names = [f'"{pos}":' for pos in range(len(header))]
    appended = f',"{status_cell}":"{PENDING}"' if status_index < 0 else ""

    def values() -> Iterator[tuple[str, str, str, bool]]:  # read as SQLite inserts them
        warned = False
        for line, row in parsed.records():
            # rows.status (counts, pending(), claims) and rows.cells (what the CSV shows)
            # are kept apart: "import changes no value", so an empty cell stays empty.
            pairs = zip(names, row, strict=True)
            cells = ",".join([name + _quote(value) for name, value in pairs if value])
            # (the JSON is no shorter than any cell in it: one len() a row, not one a cell)
            if len(cells) > EXCEL_MAX_CELL and not warned and max(map(len, row)) > EXCEL_MAX_CELL:
                warned = True
                log.warning("excel_cell_limit_exceeded", path=str(parsed.path), line=line)
            if appended:  # no cell to keep: the appended status column shows PENDING
                cells = cells + appended if cells else appended[1:]
            status = (row[status_index] if status_index >= 0 else "") or PENDING
            yield row[key_index], status, f"{{{cells}}}", status in terminal

    terminal = settings.terminal
    raw.executemany("INSERT INTO rows (key, status, cells, done) VALUES (?, ?, ?, ?)", values())
    # The CSV stays in place until the first export replaces it: known as csvjournal's own,
    # so that an export killed (or cut off by a power loss) before its rename does not make
    # it look like a hand edit. What it shows stays unknown: the exporter renders it anew.
    write_value(conn, "csv_digest", parsed.digest)
