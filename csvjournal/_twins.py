"""Keys and column names that the formula guard shows alike: ``=A`` and ``'=A`` both show
as ``'=A`` (see :func:`~csvjournal.csvio.guard_twin`). While the guard is on, two such rows
or columns cannot both exist: a merge of the CSV could not tell them apart. They are
refused at import, by a record that would make the second one, and when an open turns the
guard on over them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Container
from pathlib import Path

from csvjournal._writer import RecordOp
from csvjournal.csvio import TWIN_START, ParsedCsv, guard_twin
from csvjournal.errors import CsvFormatError, SettingsError

__all__ = ["check_import", "check_journal", "may_twin", "twin_problem"]


def may_twin(op: RecordOp) -> bool:
    """Whether ``op``'s key or a field name may be shown by the guard as another."""
    return op.key.startswith(TWIN_START) or any(n.startswith(TWIN_START) for n in op.fields)


def twin_problem(
    conn: sqlite3.Connection,
    op: RecordOp,
    columns: Container[str],
    fresh: tuple[set[str], set[str]] | None = None,
) -> str | None:
    """Why ``op`` must not be written while the guard is on (it would make a row or a
    column shown as another one is), or ``None``. ``columns`` holds names known to be
    columns already (a cache: others are looked up); ``fresh`` the keys and column names of
    records about to be written with ``op``, to which ``op``'s are added when it may be."""
    keys, names = fresh if fresh is not None else (set(), set())
    twin = _twin(conn, _ROW, op.key, keys)
    if twin is not None:
        return f"key {op.key!r} would show in the CSV as key {twin!r} does"
    own: set[str] = set()  # (the record may name both columns itself)
    for name in op.fields:
        if name not in columns and name.startswith(TWIN_START):
            twin = _twin(conn, _COLUMN, name, names | own if own else names)
            if twin is not None:
                return f"key {op.key!r}: column {name!r} would show in the header as {twin!r} does"
            own.add(name)
    keys.add(op.key)
    names.update(op.fields)
    return None


_ROW = "SELECT 1 FROM rows WHERE key = ?"
_COLUMN = "SELECT 1 FROM columns WHERE name = ?"


def _twin(conn: sqlite3.Connection, query: str, text: str, fresh: set[str]) -> str | None:
    """The existing (or ``fresh``) key or column name that the guard shows as it shows
    ``text``, a new one; None when there is none, or when ``text`` itself exists."""
    if not text.startswith(TWIN_START):
        return None
    twin = guard_twin(text)
    if twin is None or not (twin in fresh or conn.execute(query, (twin,)).fetchone()):
        return None
    return None if conn.execute(query, (text,)).fetchone() else twin  # legacy twins


def check_import(path: Path, parsed: ParsedCsv, key: str, keys: set[str]) -> None:
    """Refuse a CSV to import with the guard on that holds two header names or two keys
    (``keys``, every key of the file) shown alike.

    Raises:
        CsvFormatError: naming the file and both places.
    """
    header = parsed.header
    for index, name in enumerate(header):
        twin = guard_twin(name) if name.startswith("'") else None
        if twin is not None and twin in header:
            (line, column), at = parsed.header_place(index), parsed.header_place(header.index(twin))
            raise CsvFormatError(
                f"{path}: line {line}, column {column}: header name {name!r} would show as"
                f" {twin!r} (line {at[0]}, column {at[1]}) does, with the formula guard on"
            )
    # (every twin pair has one key starting with ': the file is read again only for lines)
    twins = {value for value in keys if value.startswith("'") and guard_twin(value) in keys}
    if not twins:
        return
    index = parsed.header.index(key)
    lines: dict[str, int] = {}
    for line, record in parsed.records():
        value = record[index]
        if value in twins or guard_twin(value) in twins:
            lines[value] = line
            twin = guard_twin(value)
            if twin in lines:
                found, column = parsed.place(line, index)
                raise CsvFormatError(
                    f"{path}: line {found}, column {column}: key {value!r} would show in the CSV"
                    f" as key {twin!r} (line {parsed.place(lines[twin], index)[0]}) does,"
                    " with the formula guard on"
                )


# The keys and column names that may show as others do once the guard is on.
_CANDIDATES = "SELECT {} FROM {} WHERE substr({}, 1, 1) IN ({})"


def check_journal(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse to turn the guard on while two rows' keys or two columns' names would show
    alike.

    Raises:
        SettingsError: naming both.
    """
    marks = ", ".join("?" * len(TWIN_START))
    for column, table, what in (("key", "rows", "keys"), ("name", "columns", "column names")):
        query = _CANDIDATES.format(column, table, column, marks)
        found = {text for (text,) in conn.execute(query, TWIN_START)}
        for text in sorted(found):
            twin = guard_twin(text)
            if twin in found:
                raise SettingsError(
                    f"{path}: formula_guard=True would show {what} {text!r} and {twin!r}"
                    " alike in the CSV, and a merge could not tell them apart: the guard"
                    " stays off"
                )
