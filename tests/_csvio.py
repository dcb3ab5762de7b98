"""What the CSV test modules share: CSV text written with minimal quoting, and reading it back.

Files are written and read back as bytes, independently of :mod:`csvjournal.csvio`.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

STATUS = "STATUS"
STAMP = "LAST_PROCESSED"


def _field(value: str, delimiter: str) -> str:
    """Minimal quoting: quoted iff the value holds the delimiter, the quote, CR or LF."""
    if any(char in value for char in (delimiter, '"', "\r", "\n")):
        return '"' + value.replace('"', '""') + '"'
    return value


def record_text(values: list[str], delimiter: str = ",", terminator: str = "\n") -> str:
    return delimiter.join(_field(value, delimiter) for value in values) + terminator


def csv_text(
    header: list[str],
    rows: list[list[str]],
    *,
    delimiter: str = ",",
    terminator: str = "\n",
    final_newline: bool = True,
) -> str:
    text = "".join(record_text(record, delimiter, terminator) for record in [header, *rows])
    return text if final_newline else text[: -len(terminator)]


def parse(data: bytes, *, delimiter: str = ",", encoding: str = "utf-8-sig") -> list[list[str]]:
    """Every record of a CSV file as the csv module reads it (BOM dropped)."""
    return list(csv.reader(io.StringIO(data.decode(encoding), newline=""), delimiter=delimiter))


def names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())
