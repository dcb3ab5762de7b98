"""The CSV file itself: dialect and encoding detection, reading with validation, rendering in
the same dialect (the atomic replace is :mod:`csvjournal._atomicfile`, re-exported here).

Every value is text: nothing is type-guessed, so ``00123``, ``NA`` and ``1e5`` stay as
written. Bad input raises :class:`~csvjournal.errors.CsvFormatError` naming the file, the
physical line (the header is line 1) and the column (characters, from 1).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from csvjournal._atomicfile import (
    atomic_write,
    fingerprint,
    remove_temp_files,
    replace_with,
    sync_file,
    temp_prefix,
    write_temp,
)
from csvjournal._csvbytes import BOM_OF, decode
from csvjournal._csvlocate import locate_after_quote, locate_field, locate_open_quote
from csvjournal.errors import CsvFormatError, JournalIOError

__all__ = [
    "EXCEL_MAX_CELL",
    "EXCEL_MAX_ROWS",
    "CsvDialect",
    "ParsedCsv",
    "atomic_write",
    "bom_of",
    "encode_csv",
    "fingerprint",
    "guard_formula",
    "read_csv",
    "remove_temp_files",
    "render_csv",
    "render_rows",
    "replace_with",
    "sync_file",
    "temp_prefix",
    "write_temp",
]

DELIMITERS = (",", ";", "\t", "|")
EXCEL_MAX_ROWS = 1_048_576  # the header included
EXCEL_MAX_CELL = 32_767
_SNIFF_RECORDS = 20  # records (the header included) the dialect is detected from
_SNIFF_CHARS = 1 << 16  # ...within this many characters at the start of the file
_FIELD_LIMIT = 2**31 - 1  # the csv module's default of 131,072 characters is too small


@dataclass(frozen=True, slots=True)
class CsvDialect:
    """How a CSV file is written, kept so that it is written back the same way."""

    delimiter: str = ","
    quotechar: str = '"'
    lineterminator: str = "\n"
    encoding: str = "utf-8"
    bom: bool = False
    final_newline: bool = True

    def to_dict(self) -> dict[str, object]:
        """The dialect as JSON-ready data."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> CsvDialect:
        """The dialect stored by :meth:`to_dict`."""
        return cls(**data)  # type: ignore[arg-type]


@dataclass(slots=True)
class ParsedCsv:
    """A CSV file read as text: its dialect, header, rows and each row's first line, and
    the :func:`fingerprint` of the file's bytes."""

    dialect: CsvDialect
    header: list[str]
    rows: list[list[str]]
    lines: list[int]
    digest: str


def _first_record_end(text: str, quotechar: str) -> int:
    """Index of the first line break outside quotes (len(text) if none). Read as the csv
    module reads: a quote opens a field only at its start (after any candidate delimiter:
    the delimiter may not be known yet), so ``Supplier's name`` opens nothing, and a
    doubled quote inside a quoted field is data."""
    quoted = False
    field_start = True
    index = 0
    while index < len(text):
        char = text[index]
        if quoted:
            if char == quotechar:
                if text.startswith(quotechar, index + 1):
                    index += 1  # an escaped quote
                else:
                    quoted = False
        elif char == quotechar and field_start:
            quoted = True
        elif char in "\r\n":
            return index
        field_start = not quoted and char in DELIMITERS
        index += 1
    return len(text)


def _sniff(text: str) -> tuple[str, str, str]:
    """(delimiter, quote character, line terminator) of the CSV ``text``.

    The delimiter is the candidate that splits the first records (header included) into
    one field count above 1; failing that, the one splitting the header most, then ``,``.
    """
    # Only a prefix is read: detection stays cheap on a file of millions of rows.
    prefix = text[:_SNIFF_CHARS]
    complete = len(prefix) == len(text)
    quotechar = '"'
    delimiter = _consistent_delimiter(prefix, complete, quotechar)
    if delimiter is None and quotechar not in prefix:
        # The single quote only on unambiguous evidence: a file with no quoting at all may
        # well hold 'single-quoted' data, and taking ' as the quote character would strip
        # it. Evidence is a table that only ' quoting makes consistent, with a field that
        # needed the quotes (see _width).
        delimiter = _consistent_delimiter(prefix, complete, "'")
        if delimiter is not None:
            quotechar = "'"
    end = _first_record_end(text, quotechar)
    if delimiter is None:
        delimiter = _header_delimiter(text[:end], quotechar)
    terminator = "\n"
    if end < len(text):
        terminator = "\r\n" if text.startswith("\r\n", end) else text[end]
    return delimiter, quotechar, terminator


def _consistent_delimiter(prefix: str, complete: bool, quotechar: str) -> str | None:
    """The delimiter giving the sampled records of ``prefix`` the widest consistent field
    count (ties: in the order of :data:`DELIMITERS`); ``None`` when none is consistent."""
    needs_quotes = quotechar != '"'
    widths = {
        delimiter: _width(_sample(prefix, complete, delimiter, quotechar), delimiter, needs_quotes)
        for delimiter in DELIMITERS
    }
    best = max(DELIMITERS, key=lambda d: (widths[d], -DELIMITERS.index(d)))
    return best if widths[best] else None


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


def read_csv(path: Path, *, encoding: str | None = None) -> ParsedCsv:
    """Read ``path`` as text in its own dialect, checking it is a well-formed table.

    Raises:
        CsvFormatError: undecodable bytes, no header, empty or duplicate header names, an
            unclosed quote, a blank line or a row with the wrong number of fields.
        JournalIOError: the file could not be read (missing, a folder, no permission).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise JournalIOError(f"{path}: could not read the CSV ({exc.strerror or exc})") from exc
    text, encoding_name, bom = decode(path, data, encoding)
    if not text.strip("\r\n"):
        raise CsvFormatError(f"{path}: line 1, column 1: the file is empty (no header line)")
    delimiter, quotechar, terminator = _sniff(text)
    dialect = CsvDialect(
        delimiter=delimiter,
        quotechar=quotechar,
        lineterminator=terminator,
        encoding=encoding_name,
        bom=bom,
        final_newline=text.endswith(("\n", "\r")),
    )
    header, rows, lines = _parse(path, text, dialect)
    _check_header(path, text, header, dialect)
    return ParsedCsv(dialect, header, rows, lines, fingerprint(data))


def _parse(
    path: Path, text: str, dialect: CsvDialect
) -> tuple[list[str], list[list[str]], list[int]]:
    if csv.field_size_limit() < _FIELD_LIMIT:
        csv.field_size_limit(_FIELD_LIMIT)  # process-wide, but only ever raised
    reader = csv.reader(
        io.StringIO(text, newline=""),
        delimiter=dialect.delimiter,
        quotechar=dialect.quotechar,
        doublequote=True,
        strict=True,
    )
    records: list[list[str]] = []
    lines: list[int] = []
    start = 1
    try:
        for record in reader:
            if not record:
                raise CsvFormatError(f"{path}: line {start}, column 1: blank line")
            records.append(record)
            lines.append(start)
            start = reader.line_num + 1
    except csv.Error as exc:
        stray = locate_after_quote(text, start, dialect.delimiter, dialect.quotechar)
        if stray is not None:  # "c"d: text after a closing quote
            line, column = stray
            what = f"{dialect.delimiter!r} or the line's end expected after a closing quote"
        else:
            line, column = locate_open_quote(text, start, dialect.delimiter, dialect.quotechar)
            what = "unclosed quote" if "end of data" in str(exc) else str(exc)
        raise CsvFormatError(f"{path}: line {line}, column {column}: {what}") from None
    header = records[0]
    for record, line in zip(records[1:], lines[1:], strict=True):
        if len(record) != len(header):
            at_line, column = locate_field(
                text, line, min(len(record), len(header)), dialect.delimiter, dialect.quotechar
            )
            raise CsvFormatError(
                f"{path}: line {at_line}, column {column}: {len(record)} fields where the header"
                f" has {len(header)}"
            )
    return header, records[1:], lines[1:]


def _check_header(path: Path, text: str, header: list[str], dialect: CsvDialect) -> None:
    seen: dict[str, int] = {}
    first = text.split("\n", 1)[0].split("\r", 1)[0]
    if first.startswith("sep=") and len(first) == len("sep=;"):
        raise CsvFormatError(
            f"{path}: line 1, column 1: Excel's {first!r} line is not supported;"
            " delete that line (the delimiter is found without it)"
        )
    for index, name in enumerate(header):
        # a quoted name may hold a line break: the field can start on a later line
        line, column = locate_field(text, 1, index, dialect.delimiter, dialect.quotechar)
        if not name:
            raise CsvFormatError(f"{path}: line {line}, column {column}: empty header name")
        if name in seen:
            raise CsvFormatError(
                f"{path}: line {line}, column {column}: duplicate header name {name!r}"
                f" (also field {seen[name] + 1})"
            )
        seen[name] = index


def _field_pattern(dialect: CsvDialect) -> re.Pattern[str]:
    return re.compile("[" + re.escape(dialect.delimiter + dialect.quotechar) + "\r\n]")


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def guard_formula(value: str) -> str:
    """``value`` as a spreadsheet will not run it (OWASP "CSV injection"): text starting
    with ``= + - @``, tab or CR gets a leading ``'``; plain numbers such as ``-12.5`` stay."""
    if value.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def unguard_formula(value: str) -> str:
    """The value that :func:`guard_formula` showed as ``value`` (itself if not guarded)."""
    if value.startswith("'") and guard_formula(value[1:]) == value:
        return value[1:]
    return value


def render_rows(
    rows: Iterable[Sequence[str]], dialect: CsvDialect, *, formula_guard: bool = False
) -> Iterable[str]:
    """Each row as one CSV record in ``dialect``, line terminator included (minimal quoting:
    a field is quoted when it holds the delimiter, the quote character or a line break)."""
    if formula_guard:
        rows = ([guard_formula(value) for value in row] for row in rows)
    needs_quotes = _field_pattern(dialect).search
    quote = dialect.quotechar
    doubled = quote * 2
    joiner = dialect.delimiter
    end = dialect.lineterminator
    special = re.compile("[" + re.escape(quote) + "\r\n]").search
    for row in rows:
        line = joiner.join(row)
        # Most rows need no quotes: no quote or line break anywhere, no delimiter in a value.
        if special(line) is None and line.count(joiner) == len(row) - 1:
            yield (line if line or len(row) != 1 else doubled) + end  # "" keeps a lone empty
            continue
        yield (
            joiner.join(
                f"{quote}{value.replace(quote, doubled)}{quote}" if needs_quotes(value) else value
                for value in row
            )
            + end
        )


def render_csv(
    header: Sequence[str],
    rows: Iterable[Sequence[str]],
    dialect: CsvDialect,
    *,
    formula_guard: bool = False,
) -> bytes:
    """The whole file: BOM, header, rows, in the dialect's encoding and line terminator."""
    text = "".join(render_rows([header], dialect)) + "".join(
        render_rows(rows, dialect, formula_guard=formula_guard)
    )
    return encode_csv(text, dialect)


def encode_csv(text: str, dialect: CsvDialect) -> bytes:
    """Rendered records as the file's bytes: the final line break kept or dropped as the
    dialect says, encoded, with the byte-order mark if the file had one."""
    end = dialect.lineterminator
    if not dialect.final_newline and text.endswith(end):
        text = text[: -len(end)]
    return bom_of(dialect) + text.encode(dialect.encoding)


def bom_of(dialect: CsvDialect) -> bytes:
    """The byte-order mark the file starts with (empty for none)."""
    return BOM_OF[dialect.encoding] if dialect.bom else b""
