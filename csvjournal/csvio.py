"""The CSV file itself: dialect and encoding detection, reading with validation, rendering in
the same dialect (the atomic replace is :mod:`csvjournal._atomicfile`, re-exported here).

Every value is text: nothing is type-guessed, so ``00123``, ``NA`` and ``1e5`` stay as
written. Bad input raises :class:`~csvjournal.errors.CsvFormatError` naming the file, the
physical line (the header is line 1) and the column (characters, from 1).
"""

from __future__ import annotations

import csv
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from csvjournal._atomicfile import (
    atomic_write,
    fingerprint,
    remove_temp_files,
    replace_with,
    sync_file,
    temp_prefix,
    write_temp,
)
from csvjournal._csvbytes import BOM_OF, check_encoding, decode
from csvjournal._csvlocate import locate_after_quote, locate_field, locate_open_quote
from csvjournal._csvsniff import SNIFF_CHARS, first_record_whole, sniff
from csvjournal._csvtext import CsvText
from csvjournal._formulaguard import (
    GUARD_RULES,
    GUARD_RULES_KNOWN,
    TWIN_START,
    guard_formula,
    guard_twin,
    sheet_guard,
    unguard_formula,
)
from csvjournal.errors import CsvFormatError, JournalIOError

__all__ = [
    "EXCEL_MAX_CELL",
    "EXCEL_MAX_ROWS",
    "GUARD_RULES",
    "GUARD_RULES_KNOWN",
    "TWIN_START",
    "CsvDialect",
    "ParsedCsv",
    "atomic_write",
    "bom_of",
    "check_encoding",
    "encode_csv",
    "fingerprint",
    "guard_formula",
    "guard_twin",
    "read_csv",
    "remove_temp_files",
    "render_csv",
    "render_rows",
    "replace_with",
    "sheet_guard",
    "sync_file",
    "temp_prefix",
    "unguard_formula",
    "write_temp",
]

EXCEL_MAX_ROWS = 1_048_576  # the header included
EXCEL_MAX_CELL = 32_767
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
    """A CSV file read as text and checked to be a well-formed table: its dialect, header
    and number of data records, and the :func:`fingerprint` of the file's bytes.

    The records are read from the text again at each :meth:`records` call: the file is held
    once, as text in pieces (see :mod:`csvjournal._csvtext`), never as a table of Python
    strings (ten times its size). ``header_text`` is text from the file's start that holds
    the header record whole.
    """

    path: Path
    dialect: CsvDialect
    header: list[str]
    count: int
    digest: str
    text: CsvText = field(repr=False)
    header_text: str = field(repr=False)

    def records(self) -> Iterator[tuple[int, list[str]]]:
        """Each data record and the physical line it starts on, in file order."""
        reader = _reader(self.text, self.dialect)
        next(reader)  # the header
        start = reader.line_num + 1
        for record in reader:
            yield start, record
            start = reader.line_num + 1

    def header_place(self, field: int) -> tuple[int, int]:
        """(line, column) where header field number ``field`` (from 0) starts."""
        dialect = self.dialect
        return locate_field(self.header_text, 1, field, dialect.delimiter, dialect.quotechar)

    def place(self, line: int, field: int) -> tuple[int, int]:
        """(line, column) where field number ``field`` (from 0) of the record starting on
        ``line`` starts: a field after a quoted line break is on a later line (for an
        error: the text is joined whole)."""
        dialect = self.dialect
        return locate_field(self.text.whole(), line, field, dialect.delimiter, dialect.quotechar)

    @property
    def rows(self) -> list[list[str]]:
        """Every data record, as one list: the whole table in memory (for small files)."""
        return [record for _, record in self.records()]


def read_csv(
    path: Path,
    *,
    encoding: str | None = None,
    expected: tuple[str, str, str] | None = None,
    usual_encoding: str | None = None,
    key: str | None = None,
) -> ParsedCsv:
    """Read ``path`` as text in its own dialect, checking it is a well-formed table.
    ``expected`` is (delimiter, quote character, a column name): the dialect to read in
    when the first records fit no dialect and its header holds that name (see
    :func:`~csvjournal._csvsniff.sniff`); ``usual_encoding`` the encoding to read in when
    ``encoding`` is None and the bytes show no other (a BOM, a re-save in UTF-8); ``key``
    the key column, which decides between delimiters that read the file alike.

    Raises:
        CsvFormatError: undecodable bytes, no header, empty or duplicate header names, an
            unclosed quote, a blank line, a row with the wrong number of fields, or a
            byte-order mark starting a line after the first (two files joined).
        JournalIOError: the file could not be read (missing, a folder, no permission).
    """
    try:
        mode = path.stat().st_mode
        if stat.S_ISREG(mode):  # a FIFO would wait for a writer for good, a device not end
            data = path.read_bytes()
    except OSError as exc:
        raise JournalIOError(f"{path}: could not read the CSV ({exc.strerror or exc})") from exc
    if stat.S_ISDIR(mode):
        raise JournalIOError(f"{path}: a folder, not a CSV file")
    if not stat.S_ISREG(mode):
        raise JournalIOError(f"{path}: not a regular file (a FIFO or a device, say)")
    digest = fingerprint(data)
    text, encoding_name, bom = decode(path, data, encoding, usual=usual_encoding)
    del data  # the text is all that is read from now on
    if text.blank():
        raise CsvFormatError(f"{path}: line 1, column 1: the file is empty (no header line)")
    sample = text.start(SNIFF_CHARS)
    if len(text.pieces) > 1 and not first_record_whole(sample):  # a header of MBs
        sample = text.whole()  # (the sniff reads the header whole)
    delimiter, quotechar, terminator = sniff(sample, expected, key)
    dialect = CsvDialect(
        delimiter=delimiter,
        quotechar=quotechar,
        lineterminator=terminator,
        encoding=encoding_name,
        bom=bom,
        final_newline=text.ends_with_break(),
    )
    header, count, header_lines = _scan(path, text, dialect)
    head = sample  # (the first piece at least)
    if header_lines > _breaks(head, 0, len(head)):  # a header of more than the sample
        head = text.whole()
    _check_header(path, head, header, dialect)
    return ParsedCsv(path, dialect, header, count, digest, text, head)


_INNER_BOM = re.compile("(?<=[\r\n])\ufeff")


def _breaks(text: str, start: int, end: int) -> int:
    """The line breaks in ``text[start:end]`` as the csv reader ends lines: CRLF, LF or a
    lone CR."""
    return (
        text.count("\n", start, end) + text.count("\r", start, end) - text.count("\r\n", start, end)
    )


def _inner_boms(text: CsvText) -> set[int]:
    """The lines after the first that start with a byte-order mark: where two files were
    joined (``cat a.csv b.csv``, each saved by Excel as "CSV UTF-8"), the second's header
    would become a row whose key holds an invisible character. (Inside a quoted cell, such
    a line is data: :func:`_scan` refuses only a record that starts there.)"""
    found: set[int] = set()
    if not text.holds("\ufeff"):  # at memory speed
        return found
    line = 1  # the line the piece starts on
    for index, piece in enumerate(text.pieces):
        if "\ufeff" in piece:
            starts = [match.start() for match in _INNER_BOM.finditer(piece)]
            if index and piece.startswith("\ufeff"):  # a piece starts after a line break
                starts.insert(0, 0)
            at, counted = 0, line
            for start in starts:
                counted += _breaks(piece, at, start)
                found.add(counted)
                at = start
        line += _breaks(piece, 0, len(piece))
    return found


def _reader(text: CsvText, dialect: CsvDialect) -> Any:
    if csv.field_size_limit() < _FIELD_LIMIT:
        csv.field_size_limit(_FIELD_LIMIT)  # process-wide, but only ever raised
    return csv.reader(
        text.lines(),
        delimiter=dialect.delimiter,
        quotechar=dialect.quotechar,
        doublequote=True,
        strict=True,
    )


def _scan(path: Path, text: CsvText, dialect: CsvDialect) -> tuple[list[str], int, int]:
    """The header, the number of data records of ``text`` and the lines the header spans,
    checking every record (the records themselves are not kept)."""
    reader = _reader(text, dialect)
    header: list[str] = []
    width = count = header_lines = 0
    start = 1
    boms = _inner_boms(text)
    try:
        for record in reader:
            if boms and start in boms:
                raise CsvFormatError(
                    f"{path}: line {start}, column 1: a byte-order mark (U+FEFF) starts this"
                    " line, as where two files were joined; delete it, and the second file's"
                    " header line if it repeats the first"
                )
            if not record:
                raise CsvFormatError(
                    f"{path}: line {start}, column 1: blank line (a CSV has none: delete it)"
                )
            if not width:  # a record has a field at least: this is the header
                header, width, header_lines = record, len(record), reader.line_num
            elif len(record) != width:
                _wrong_width(path, text.whole(), dialect, line=start, got=len(record), width=width)
            else:
                count += 1
            start = reader.line_num + 1
    except csv.Error as exc:
        whole = text.whole()
        stray = locate_after_quote(whole, start, dialect.delimiter, dialect.quotechar)
        if stray is not None:  # "c"d: text after a closing quote
            line, column = stray
            what = f"{dialect.delimiter!r} or the line's end expected after a closing quote"
        else:
            line, column = locate_open_quote(whole, start, dialect.delimiter, dialect.quotechar)
            what = "unclosed quote" if "end of data" in str(exc) else str(exc)
        raise CsvFormatError(f"{path}: line {line}, column {column}: {what}") from None
    return header, count, header_lines


def _wrong_width(
    path: Path, text: str, dialect: CsvDialect, *, line: int, got: int, width: int
) -> NoReturn:
    at_line, column = locate_field(
        text, line, min(got, width), dialect.delimiter, dialect.quotechar
    )
    raise CsvFormatError(
        f"{path}: line {at_line}, column {column}: {got} field{'s' if got != 1 else ''}"
        f" where the header has {width}"
    )


def _check_header(path: Path, text: str, header: list[str], dialect: CsvDialect) -> None:
    seen: dict[str, int] = {}
    first = text.split("\n", 1)[0].split("\r", 1)[0]
    if first.startswith("sep=") and len(first) == len("sep=;"):
        raise CsvFormatError(
            f"{path}: line 1, column 1: Excel's {first!r} line is not supported;"
            " delete that line (the delimiter is found without it)"
        )
    for index, name in enumerate(header):
        if name and name not in seen:
            seen[name] = index
            continue
        # a quoted name may hold a line break: the field can start on a later line (found
        # only here: a search for each name's place took a 400,000-name header minutes)
        line, column = locate_field(text, 1, index, dialect.delimiter, dialect.quotechar)
        if not name:
            trailing = not any(header[index:])  # a spreadsheet's empty columns: a;b;;;
            hint = (
                ": the header ends in empty names (empty columns saved by a spreadsheet?);"
                " delete them, or name them"
                if trailing
                else ""
            )
            raise CsvFormatError(f"{path}: line {line}, column {column}: empty header name{hint}")
        at = locate_field(text, 1, seen[name], dialect.delimiter, dialect.quotechar)
        raise CsvFormatError(
            f"{path}: line {line}, column {column}: duplicate header name {name!r}"
            f" (also at line {at[0]}, column {at[1]})"
        )


def _field_pattern(dialect: CsvDialect) -> re.Pattern[str]:
    return re.compile("[" + re.escape(dialect.delimiter + dialect.quotechar) + "\r\n]")


def render_rows(
    rows: Iterable[Sequence[str]], dialect: CsvDialect, *, formula_guard: bool = False
) -> Iterable[str]:
    """Each row as one CSV record in ``dialect``, line terminator included (minimal quoting:
    a field is quoted when it holds the delimiter, the quote character or a line break,
    and a record's first field when it starts with U+FEFF: read back, a byte-order mark
    starting a line is where two files were joined)."""
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
        if special(line) is None and line.count(joiner) == len(row) - 1 and line[:1] != "\ufeff":
            yield (line if line or len(row) != 1 else doubled) + end  # "" keeps a lone empty
            continue
        fields = [
            f"{quote}{value.replace(quote, doubled)}{quote}" if needs_quotes(value) else value
            for value in row
        ]
        if line[:1] == "\ufeff" and fields[0][:1] == "\ufeff":
            fields[0] = f"{quote}{fields[0]}{quote}"  # (no quote inside: it was not quoted)
        yield joiner.join(fields) + end


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
