"""Reading the sheet a merge brings in: in the encoding and dialect it was saved in.

The exporter wrote the file in the journal's encoding and dialect, then someone edited it,
perhaps in a spreadsheet that saved it in another. A BOM says which encoding; UTF-16 text
is told by its NULs. But a single-byte encoding (cp1252, latin-1) reads any bytes, so UTF-8
text (what LibreOffice and Google Sheets save) would be taken in as ``MÃ¼ller``, and text
other than ASCII that is valid UTF-8 is seldom cp1252. Seldom is not never: a cp1252 sheet
holding ``CafÃ©`` is valid UTF-8 too, and read as such every such cell nobody touched would
change. So when the bytes allow both, the file is read both ways, and the reading whose
text the journal holds more of wins (a tie: UTF-8, as a new row typed in a UTF-8 sheet is
the likelier case).
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import Connection, text

from csvjournal._csvbytes import single_byte
from csvjournal._settings import Settings
from csvjournal.csvio import ParsedCsv, read_csv, sheet_guard
from csvjournal.errors import CsvFormatError

__all__ = ["read_sheet"]

_SAMPLE_ROWS = 20_000  # rows whose text is compared, of the journal and of the file
# Cells hold JSON with every character other than ASCII escaped (\uXXXX).
_NON_ASCII_ROWS = text(
    "SELECT key, cells FROM rows WHERE instr(cells, '\\u') > 0 OR key GLOB '*[^ -~]*' LIMIT :limit"
)


def read_sheet(conn: Connection, path: Path, settings: Settings, encoding: str | None) -> ParsedCsv:
    """Read the sheet ``path`` to merge into the journal of ``settings`` (``conn`` reads
    the journal): in ``encoding`` if given, else as its bytes say (see the module).

    Raises:
        CsvFormatError: the file is not valid input.
        JournalIOError: the file could not be read.
    """
    show = sheet_guard(settings.formula_guard, settings.guard_rules)[0]
    # When the first records fit no dialect (a broken row), the exported one.
    expected = (settings.dialect.delimiter, settings.dialect.quotechar, show(settings.key_column))
    stored = settings.dialect.encoding
    parsed = read_csv(path, encoding=encoding, usual_encoding=stored, expected=expected)
    switched = parsed.dialect.encoding != stored and not parsed.dialect.bom
    if encoding is not None or not switched or not single_byte(stored):
        return parsed
    try:
        other = read_csv(path, encoding=stored, expected=expected)
    except CsvFormatError:
        return parsed
    known = _journal_texts(conn)
    if len(known & _texts(other)) > len(known & _texts(parsed)):
        return other
    return parsed


def _journal_texts(conn: Connection) -> set[str]:
    """Keys and cells other than ASCII of (a sample of) the journal's rows."""
    found: set[str] = set()
    for key, cells in conn.execute(_NON_ASCII_ROWS, {"limit": _SAMPLE_ROWS}):
        found.update(value for value in [key, *json.loads(cells).values()] if not value.isascii())
    return found


def _texts(parsed: ParsedCsv) -> set[str]:
    """Cells other than ASCII of (a sample of) the file's records."""
    found: set[str] = set()
    for count, (_, values) in enumerate(parsed.records()):
        if count >= _SAMPLE_ROWS:
            break
        found.update(value for value in values if not value.isascii())
    return found
