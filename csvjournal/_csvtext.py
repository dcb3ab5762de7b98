"""A CSV file's text, held in pieces that each end at a line break.

Python keeps a string at the width of its widest character: one emoji in a file of
300 MB made its text 1.2 GB. Decoded a few MB at a time, each piece takes the width of its
own characters, and a piece never splits a line, so the lines of the pieces are the lines
of the whole text.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["CsvText", "lines"]

_CHUNK = 1 << 22  # bytes decoded at a time
_LINE_BREAK = re.compile("\r\n|\r|\n")
# What str.splitlines() also ends a line at, and the csv module does not.
_OTHER_BREAK = re.compile("[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_SPLIT = 1 << 20  # characters split into lines at a time
_BLANK = re.compile("[\r\n]*")


@dataclass(frozen=True, slots=True)
class CsvText:
    """The text of a CSV file in pieces, each ending at a line break but perhaps the last
    (one piece for a file without a line feed: a CR-only file)."""

    pieces: tuple[str, ...]

    @classmethod
    def decode(cls, data: memoryview, encoding: str) -> CsvText:
        """The text of ``data`` in ``encoding``.

        Raises:
            UnicodeError: bytes that are not in the encoding (or a codec's own failure).
            LookupError: an unknown encoding.
        """
        decoder = codecs.getincrementaldecoder(encoding)("strict")
        pieces: list[str] = []
        carry = ""
        starts = range(0, len(data) - _CHUNK, _CHUNK)  # each chunk but the last
        for start in starts:
            text = carry + decoder.decode(data[start : start + _CHUNK])
            cut = _cut(text)
            if cut:
                pieces.append(text[:cut])
            carry = text[cut:]
        # the rest is the last piece: a file of one chunk is one piece
        pieces.append(carry + decoder.decode(data[len(starts) * _CHUNK :], final=True))
        return cls(tuple(pieces))

    @property
    def head(self) -> str:
        """The first piece: the first line whole, and the first MBs of the file."""
        return self.pieces[0]

    def start(self, chars: int) -> str:
        """The first pieces, as many as hold ``chars`` characters (or all)."""
        taken, length = [], 0
        for piece in self.pieces:
            if length >= chars:
                break
            taken.append(piece)
            length += len(piece)
        return taken[0] if len(taken) == 1 else "".join(taken)

    def whole(self) -> str:
        """The text as one string (for error messages: the slow path)."""
        return self.pieces[0] if len(self.pieces) == 1 else "".join(self.pieces)

    def lines(self) -> Iterator[str]:
        """The lines of the text, as :func:`lines` gives them."""
        for piece in self.pieces:
            yield from lines(piece)

    def blank(self) -> bool:
        """Whether the text holds nothing but line breaks."""
        return all(_BLANK.fullmatch(piece) for piece in self.pieces)

    def ends_with_break(self) -> bool:
        """Whether the text ends at a line break."""
        return self.pieces[-1].endswith(("\n", "\r"))

    def holds(self, char: str) -> bool:
        """Whether ``char`` is in the text."""
        return any(char in piece for piece in self.pieces)


def _cut(text: str) -> int:
    """Where to end a piece in ``text``: after its last LF, or after a CR that no LF follows
    in it (a CRLF is never split), else 0 (it all goes on into the next piece)."""
    lf = text.rfind("\n")
    if lf >= 0:
        return lf + 1
    cr = text.rfind("\r", 0, len(text) - 1)  # one at the very end may begin a CRLF
    return cr + 1


def lines(text: str) -> Iterator[str]:
    """The lines of ``text`` as ``io.StringIO(text, newline="")`` gives them (each ends at a
    CRLF, LF or lone CR, kept), without its copy of the text at 4 bytes a character."""
    if _OTHER_BREAK.search(text) is None:  # str.splitlines, in C, a part at a time
        start = 0
        while start < len(text):
            end = text.find("\n", start + _SPLIT) + 1 or len(text)  # never inside a CRLF
            yield from text[start:end].splitlines(keepends=True)
            start = end
        return
    start = 0
    for match in _LINE_BREAK.finditer(text):  # also breaks splitlines() would cut at
        end = match.end()
        yield text[start:end]
        start = end
    if start < len(text):
        yield text[start:]
