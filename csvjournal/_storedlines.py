"""The records an exporter stores in ``rows.line`` for the next one: what they were rendered
for (the ``lines_format`` setting and ``rows.line_columns``), and how a record stored for
fewer columns than the CSV has now is completed as it is read (the new columns' cells are
empty: a delimiter each, before the line break)."""

from __future__ import annotations

from csvjournal.csvio import GUARD_RULES, CsvDialect

__all__ = ["lines_format", "stored_columns", "stored_count", "stored_line"]


def lines_format(column_count: int, formula_guard: bool) -> dict[str, object]:
    """What stored records were rendered for (the ``lines_format`` setting): the column
    count of a record whose ``line_columns`` is NULL, and the formula guard. Records are
    saved at the column count of their time, which only grows: while it is this count
    still, every stored record has it. Guarded, the guard's rules too (:data:`GUARD_RULES`):
    records guarded by an older csvjournal's rules are rendered anew."""
    if formula_guard:
        return {"columns": column_count, "formula_guard": True, "guard_rules": GUARD_RULES}
    return {"columns": column_count, "formula_guard": False}


def stored_columns(stored: object, formula_guard: bool) -> int | None:
    """The column count of a stored record without ``line_columns``, when the stored
    ``lines_format`` suits ``formula_guard``; ``None`` when no stored record does."""
    if not isinstance(stored, dict) or stored.get("formula_guard") is not formula_guard:
        return None
    if formula_guard and stored.get("guard_rules") != GUARD_RULES:
        return None
    columns = stored.get("columns")
    return columns if type(columns) is int else None


def stored_count(base: int) -> str:
    """SQL: the column count a stored record was rendered for (``base``, the count in
    ``lines_format``, for one stored before ``line_columns`` existed)."""
    return f"coalesce(line_columns, {int(base)})"


def stored_line(base: int, width: int, dialect: CsvDialect) -> str:
    """SQL: ``rows.line`` as a record of ``width`` columns, completed with empty cells when
    stored for fewer; NULL when there is none, or it has more. The line break is taken off
    by ``rtrim``: a CR or LF in a record's last cell is inside quotes, so the record ends in
    exactly one terminator (made of integers, ``char()`` codes and the delimiter only)."""
    if base == width:  # every stored record has the CSV's width (see lines_format)
        return "line"
    count = stored_count(base)
    end = f"char({','.join(str(ord(char)) for char in dialect.lineterminator)})"
    pads = "'" + (dialect.delimiter * width).replace("'", "''") + "'"
    return (
        f"CASE WHEN {count} = {int(width)} THEN line WHEN {count} < {int(width)} THEN"
        f" rtrim(line, {end}) || substr({pads}, 1, {int(width)} - {count}) || {end} END"
    )
