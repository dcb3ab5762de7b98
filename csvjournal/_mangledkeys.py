"""Keys a spreadsheet changed: read as numbers or dates, written back as it shows them.

A merge adds the rows whose keys the journal lacks and reports the journal's rows the file
lacks. When a spreadsheet read the key column as numbers (``00123`` shown as ``123``,
``123456789012`` as ``1.23457E+11``) or as dates (``2026-11-01`` shown as ``11/1/2026``
or ``01.11.2026``), every such row would come back as a new row, its work done a second
time: :func:`refuse_mangled_keys` refuses the merge instead, naming the first such key.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import ROUND_DOWN, ROUND_HALF_UP, Context, Decimal
from pathlib import Path

from csvjournal.csvio import ParsedCsv
from csvjournal.errors import CsvFormatError

__all__ = ["refuse_mangled_keys"]

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,4})?")
_LONGEST_NUMBER = 40  # characters: no spreadsheet shows a number longer
_EXCEL_DIGITS = 15  # significant digits Excel keeps of a number
_ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

_AS_NUMBERS = "numbers (leading zeros lost, digits rounded)"
_AS_DATES = "dates (shown in the spreadsheet's date format)"


def refuse_mangled_keys(
    path: Path,
    parsed: ParsedCsv,
    column: str,
    *,
    added: list[str],
    missing: list[str],
    read: Callable[[str], str],
) -> None:
    """Refuse new keys (``added``) that are how a spreadsheet shows a key ``missing``
    from the file, as a number or as a date.

    Raises:
        CsvFormatError: the first such key, at its line, with the key it stands for.
    """
    for pairs, how in (
        (_numbered(added, missing), _AS_NUMBERS),
        (_dated(added, missing), _AS_DATES),
    ):
        if pairs:
            _refuse(path, parsed, column, pairs=pairs, how=how, read=read)


def _refuse(
    path: Path,
    parsed: ParsedCsv,
    column: str,
    *,
    pairs: dict[str, str],
    how: str,
    read: Callable[[str], str],
) -> None:
    index = parsed.header.index(column)
    line, new = next(
        (line, read(values[index]))
        for line, values in parsed.records()
        if read(values[index]) in pairs
    )
    more = f" (and {len(pairs) - 1} more like it)" if len(pairs) > 1 else ""
    raise CsvFormatError(
        f"{path}: line {line}, column {column!r}: key {new!r} is not in the journal, and its"
        f" key {pairs[new]!r} is missing from the file{more}: a spreadsheet read the keys as"
        f" {how}. Put the keys back (import the column as text) and merge again; if the new"
        " keys are meant, keep the old rows in the file too (a merge never deletes a row)"
    )


def _as_number(key: str) -> Decimal | None:
    if len(key) > _LONGEST_NUMBER or not _NUMBER.fullmatch(key):
        return None
    return Decimal(key)


def _shown_by(gone: list[tuple[Decimal, str]], digits: int) -> dict[Decimal, str]:
    """The keys ``gone`` by each number a spreadsheet could show them as with ``digits``
    significant digits: rounded or cut (``1.23457E+11`` for ``123456789012``; Excel keeps
    15 digits of a longer number)."""
    shown: dict[Decimal, str] = {}
    for number, key in gone:
        if len(number.normalize().as_tuple().digits) <= digits:
            shown.setdefault(number.normalize(), key)
            continue
        for mode in (ROUND_HALF_UP, ROUND_DOWN):
            shown.setdefault(Context(prec=digits, rounding=mode).plus(number).normalize(), key)
    return shown


def _numbered(added: list[str], missing: list[str]) -> dict[str, str]:
    """New key -> the missing key it is the number of (``123`` for ``00123``)."""
    gone = [(number, key) for key in missing if (number := _as_number(key)) is not None]
    if not gone:
        return {}
    by_digits: dict[int, dict[Decimal, str]] = {}  # one index per precision the file shows
    pairs: dict[str, str] = {}
    for key in added:
        number = _as_number(key)
        if number is None:
            continue
        shown = number.normalize()
        # rounded only as spreadsheets round: in scientific notation, or to 15 digits
        rounded = "e" in key.lower() or len(key.strip("+-0").replace(".", "")) >= _EXCEL_DIGITS
        digits = len(shown.as_tuple().digits) if rounded else _LONGEST_NUMBER
        if digits not in by_digits:
            by_digits[digits] = _shown_by(gone, digits)
        if shown in by_digits[digits]:
            pairs[key] = by_digits[digits][shown]
    return pairs


def _date_renderings(year: int, month: int, day: int) -> set[str]:
    """How spreadsheets show the date, by the usual date formats of their locales."""
    y, yy, name = str(year), f"{year % 100:02d}", _MONTHS[month - 1]
    shown = set()
    for m, d in ((str(month), str(day)), (f"{month:02d}", f"{day:02d}")):
        for year_text in (y, yy):
            shown |= {f"{m}/{d}/{year_text}", f"{d}/{m}/{year_text}", f"{d}.{m}.{year_text}"}
            shown |= {f"{d}-{m}-{year_text}", f"{d}-{name}-{year_text}"}
        shown |= {f"{y}/{m}/{d}", f"{y}.{m}.{d}", f"{d}. {name} {y}"}
    shown |= {f"{name} {day}, {y}", f"{day} {name} {y}"}
    return shown


def _dated(added: list[str], missing: list[str]) -> dict[str, str]:
    """New key -> the missing ISO date key a spreadsheet shows so (``11/1/2026`` for
    ``2026-11-01``)."""
    shown: dict[str, str] = {}
    for key in missing:
        found = _ISO_DATE.fullmatch(key)
        if found is None:
            continue
        year, month, day = (int(part) for part in found.groups())
        if not (1 <= month <= 12 and 1 <= day <= 31):
            continue
        for text in _date_renderings(year, month, day):
            shown.setdefault(text, key)
    return {key: shown[key] for key in added if key in shown} if shown else {}
