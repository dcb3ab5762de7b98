"""What the CSV test modules share: CSV text written with minimal quoting, and reading it back.

Files are written and read back as bytes, independently of :mod:`csvjournal.csvio`.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

STATUS = "STATUS"
STAMP = "LAST_PROCESSED"


def _field(value: str, delimiter: str, quote: str = '"') -> str:
    """Minimal quoting: quoted iff the value holds the delimiter, the quote, CR or LF."""
    if any(char in value for char in (delimiter, quote, "\r", "\n")):
        return quote + value.replace(quote, quote * 2) + quote
    return value


def record_text(
    values: list[str], delimiter: str = ",", terminator: str = "\n", quote: str = '"'
) -> str:
    return delimiter.join(_field(value, delimiter, quote) for value in values) + terminator


def csv_text(
    header: list[str],
    rows: list[list[str]],
    *,
    delimiter: str = ",",
    terminator: str = "\n",
    final_newline: bool = True,
    quote: str = '"',
) -> str:
    text = "".join(record_text(record, delimiter, terminator, quote) for record in [header, *rows])
    return text if final_newline else text[: -len(terminator)]


def parse(
    data: bytes, *, delimiter: str = ",", encoding: str = "utf-8-sig", quote: str = '"'
) -> list[list[str]]:
    """Every record of a CSV file as the csv module reads it (BOM dropped)."""
    text = io.StringIO(data.decode(encoding), newline="")
    return list(csv.reader(text, delimiter=delimiter, quotechar=quote))


def names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())
