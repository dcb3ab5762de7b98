"""Finding the line and column of a place in CSV text, for error messages (slow path only)."""

from __future__ import annotations

import re
from collections.abc import Iterator

__all__ = ["locate_field", "locate_offset", "locate_open_quote", "outside_quotes"]


_BREAK = re.compile("\r\n|\r|\n")


def _line_start(text: str, line: int) -> int:
    """Offset of the first character of physical ``line`` (1-based; CR, LF or CRLF end lines)."""
    if line <= 1:
        return 0
    # one pass (a search for each line's CR and LF went to the text's end for each line)
    for number, found in enumerate(_BREAK.finditer(text), start=2):
        if number == line:
            return found.end()
    return len(text)


def _position(text: str, offset: int) -> tuple[int, int]:
    """(line, column), both from 1, of ``offset`` in ``text``."""
    line, start = 1, 0
    for found in _BREAK.finditer(text, 0, offset):  # a CRLF cut at ``offset``: its CR
        line += 1
        start = found.end()
    return line, offset - start + 1


def locate_offset(text: str, offset: int) -> tuple[int, int]:
    """(line, column), both from 1, of ``offset`` in ``text``: lines end as the csv module
    ends them (CRLF, LF or a lone CR), columns count characters."""
    return _position(text, offset)


def outside_quotes(text: str, start: int, delimiters: str, quotechar: str) -> Iterator[int]:
    """The index of each character of ``text`` from ``start`` on that is outside quotes, read
    as the csv module reads: a quote opens a field only at its start (after one of
    ``delimiters``), so ``5" pipe`` opens nothing, and a doubled quote inside a quoted
    field is data. The quotes themselves are not given."""
    quoted = False
    field_start = True
    index = start
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
        else:
            yield index
        field_start = not quoted and char in delimiters
        index += 1


def locate_field(
    text: str, line: int, field: int, delimiter: str, quotechar: str
) -> tuple[int, int]:
    """(line, column) where field number ``field`` (from 0) of the record starting on
    ``line`` starts; the record's end when it has fewer fields."""
    start = _line_start(text, line)
    found, current = (start if field == 0 else len(text)), 0
    for index in outside_quotes(text, start, delimiter, quotechar) if field else ():
        if text[index] in "\r\n":
            found = index
            break
        if text[index] == delimiter:
            current += 1
            if current == field:
                found = index + 1
                break
    return _position(text, found)


def _scan(text: str, line: int, delimiter: str, quotechar: str) -> tuple[int, int, int]:
    """Read the record starting on ``line`` as the csv module does: its start, where a quote
    left open begins (-1: none), and the first character after a closing quote that is
    neither the delimiter nor the line's end (-1: none). A doubled quote inside a quoted
    field is data."""
    start = _line_start(text, line)
    index = start
    opened = stray = -1
    field_start = True
    while index < len(text):
        char = text[index]
        if opened >= 0:
            if char == quotechar:
                if text.startswith(quotechar, index + 1):
                    index += 1  # an escaped quote
                else:
                    opened = -1
                    after = text[index + 1 : index + 2]
                    if stray < 0 and after not in ("", delimiter, "\r", "\n"):
                        stray = index + 1
        elif char == quotechar and field_start:
            opened = index
        elif char in "\r\n":
            break
        field_start = opened < 0 and char == delimiter
        index += 1
    return start, opened, stray


def locate_open_quote(text: str, line: int, delimiter: str, quotechar: str) -> tuple[int, int]:
    """(line, column) of the quote left open in the record starting on ``line``, or of the
    record's start when no quote is open."""
    start, opened, _ = _scan(text, line, delimiter, quotechar)
    return _position(text, opened if opened >= 0 else start)


def locate_after_quote(
    text: str, line: int, delimiter: str, quotechar: str
) -> tuple[int, int] | None:
    """(line, column) of the first character that follows a closing quote in the record
    starting on ``line`` without being the delimiter or the line's end (``"c"d``), or
    ``None``."""
    stray = _scan(text, line, delimiter, quotechar)[2]
    return None if stray < 0 else _position(text, stray)
