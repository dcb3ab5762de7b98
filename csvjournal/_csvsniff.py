"""Detecting a CSV's dialect from the start of its text: the delimiter, the quote character
and the line terminator, as a spreadsheet or pandas would read them."""

from __future__ import annotations

import csv
import io

from csvjournal._csvlocate import outside_quotes

__all__ = ["DELIMITERS", "SNIFF_CHARS", "first_record_whole", "sniff"]

DELIMITERS = (",", ";", "\t", "|")
_SNIFF_RECORDS = 20  # records (the header included) the dialect is detected from
SNIFF_CHARS = 1 << 16  # ...within this many characters at the start of the file


def first_record_whole(text: str) -> bool:
    """Whether ``text`` (a file's first pieces) holds its first record whole, read with
    ``"`` quoting: a line break outside quotes ends it before the text does."""
    return _first_record_end(text, '"') < len(text)


def _first_record_end(text: str, quotechar: str) -> int:
    """Index of the first line break outside quotes (len(text) if none). Read as the csv
    module reads: a quote opens a field only at its start (after any candidate delimiter:
    the delimiter may not be known yet), so ``Supplier's name`` opens nothing, and a
    doubled quote inside a quoted field is data."""
    outside = outside_quotes(text, 0, "".join(DELIMITERS), quotechar)
    return next((index for index in outside if text[index] in "\r\n"), len(text))


def sniff(
    text: str, expected: tuple[str, str, str] | None = None, key: str | None = None
) -> tuple[str, str, str]:
    """(delimiter, quote character, line terminator) of the CSV ``text``.

    The delimiter is the candidate that splits the first records (header included) into
    one field count above 1 (the widest, preferring one whose header holds the column
    ``key``, or ``expected``'s column, when given). Failing that, ``expected``
    (delimiter, quote character, a column name) when that dialect reads a header
    holding the name: a file our exporter
    wrote, edited by hand, with a broken row among the first (a file re-saved in another
    dialect reads consistently in that one). Failing that, the delimiter splitting the
    header most, then ``,``.
    """
    # Only a prefix is read: detection stays cheap on a file of millions of rows.
    prefix = text[:SNIFF_CHARS]
    complete = len(prefix) == len(text)
    quotechar = '"'
    if key is None and expected is not None:
        key = expected[2]
    delimiter = _consistent_delimiter(prefix, complete, quotechar, key)
    if delimiter is None and quotechar not in prefix:
        # The single quote only on unambiguous evidence: a file with no quoting at all may
        # well hold 'single-quoted' data, and taking ' as the quote character would strip
        # it. Evidence is a table that only ' quoting makes consistent, with a field that
        # needed the quotes (see _width).
        delimiter = _consistent_delimiter(prefix, complete, "'", key)
        if delimiter is not None:
            quotechar = "'"
    if delimiter is None and expected is not None and _header_holds(text, *expected):
        return expected[0], expected[1], _terminator(text, _first_record_end(text, expected[1]))
    end = _first_record_end(text, quotechar)
    if delimiter is None:
        delimiter = _header_delimiter(text[:end], quotechar)
    return delimiter, quotechar, _terminator(text, end)


def _terminator(text: str, end: int) -> str:
    """The line terminator of the record ending at ``end`` (``\\n`` if it is the last)."""
    if end == len(text):
        return "\n"
    return "\r\n" if text.startswith("\r\n", end) else text[end]


def _header_holds(text: str, delimiter: str, quotechar: str, name: str) -> bool:
    """Whether the first record of ``text``, read in this dialect, has a field ``name``."""
    # (a header longer than the sample is not ours: our columns' names are short)
    header = text[: _first_record_end(text[:SNIFF_CHARS], quotechar)]
    reader = csv.reader(
        [header], delimiter=delimiter, quotechar=quotechar, doublequote=True, strict=True
    )
    try:
        return name in next(reader, [])
    except csv.Error:
        return False


def _consistent_delimiter(
    prefix: str, complete: bool, quotechar: str, key: str | None = None
) -> str | None:
    """The delimiter giving the sampled records of ``prefix`` the widest consistent field
    count, among those whose header holds the column ``key`` if any does (``A;1,50``
    reads as two fields either way: the header ``Key;Amount, EUR`` says which); ties in
    the order of :data:`DELIMITERS`. ``None`` when none is consistent."""
    needs_quotes = quotechar != '"'
    samples = {d: _sample(prefix, complete, d, quotechar) for d in DELIMITERS}
    widths = {d: _width(samples[d], d, needs_quotes) for d in DELIMITERS}
    candidates = [d for d in DELIMITERS if widths[d]]
    holding = [d for d in candidates if key is not None and key in samples[d][0]]
    if not candidates:
        return None
    return max(holding or candidates, key=lambda d: (widths[d], -DELIMITERS.index(d)))


def _sample(prefix: str, complete: bool, delimiter: str, quotechar: str) -> list[list[str]]:
    """The first records of ``prefix`` (at most :data:`_SNIFF_RECORDS`) read in this
    dialect, up to the first that cannot be read; never one the prefix may have cut off."""
    reader = csv.reader(
        io.StringIO(prefix, newline=""),
        delimiter=delimiter,
        quotechar=quotechar,
        doublequote=True,
        strict=True,
    )
    records: list[list[str]] = []
    try:
        for record in reader:
            records.append(record)
            if len(records) > _SNIFF_RECORDS:
                break
    except csv.Error:
        pass  # read_csv's own parse reports it, in the dialect the records before suggest
    if len(records) > _SNIFF_RECORDS or not complete:
        del records[-1:]  # perhaps only the start of a record
    return records


def _width(records: list[list[str]], delimiter: str, needs_quotes: bool) -> int:
    """The field count every record shares when above 1, else 0. With ``needs_quotes``,
    also 0 unless a field holds the delimiter or a line break: only quoting puts them in a
    field (strict reading wants a closing quote next to a delimiter or line end)."""
    width = len(records[0]) if records else 0
    if width < 2 or any(len(record) != width for record in records):
        return 0
    if needs_quotes and not any(
        delimiter in value or "\n" in value or "\r" in value
        for record in records
        for value in record
    ):
        return 0
    return width


def _header_delimiter(header: str, quotechar: str) -> str:
    """The delimiter occurring most often outside quotes in the header line (ties: in the
    order of :data:`DELIMITERS`), ``,`` when there is none."""
    counts = {d: _count_outside_quotes(header, d, quotechar) for d in DELIMITERS}
    delimiter = max(DELIMITERS, key=lambda d: (counts[d], -DELIMITERS.index(d)))
    return delimiter if counts[delimiter] else ","


def _count_outside_quotes(line: str, char: str, quotechar: str) -> int:
    return sum(
        1
        for i, part in enumerate(line.split(quotechar))
        if i % 2 == 0
        for _ in range(part.count(char))
    )
