"""A CSV's records kept as the bytes of the file they were read from, plus what changed.

After a crash the CSV on disk is the last export, a few thousand records behind a journal of
perhaps a million rows. Reading the file and finding where each record starts (numpy, at
memory speed) costs a tenth of reading a million stored records back from the journal or
splitting the text into a million strings; the next export writes the unchanged stretches
as slices of the old bytes and encodes only the records that changed.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when first needed: most processes never slice a file
    import numpy as np

__all__ = ["FileLines"]


def _newlines_are_single_bytes(encoding: str) -> bool:
    """Whether CR and LF are one byte each in ``encoding`` and no other character holds
    those bytes (ASCII-compatible encodings; not UTF-16)."""
    name = codecs.lookup(encoding).name
    return name in {"utf-8", "ascii"} or name.startswith(("iso8859-", "cp125"))


class FileLines:
    """Records ``0 .. n-1`` as stretches of ``data`` (record ``i`` is the bytes from
    ``starts[i]`` to ``starts[i + 1]``), overridden or extended by rendered text."""

    def __init__(
        self, data: bytes, starts: np.ndarray, encoding: str, end: str, *, open_end: bool
    ) -> None:
        self._data = data
        self._starts = starts
        self._base = len(starts) - 1
        self._encoding = encoding
        self._end = end
        self._open_end = open_end  # the file's last record has no line terminator
        self._changed: dict[int, str] = {}
        self._added: list[str] = []

    @classmethod
    def parse(
        cls, data: bytes, skip: int, records: int, encoding: str, end: str
    ) -> FileLines | None:
        """The records of ``data`` after its first ``skip`` bytes (BOM and header), each
        ending in ``end``, the last perhaps without; ``None`` unless there are exactly
        ``records`` of them (a line break inside a quoted cell makes more)."""
        if not _newlines_are_single_bytes(encoding) or end not in ("\n", "\r\n", "\r"):
            return None
        import numpy as np

        whole = np.frombuffer(data, dtype=np.uint8)
        breaks = np.flatnonzero(whole[skip:] == ord(end[-1])) + (skip + 1)
        complete = len(data) == skip or data.endswith(end.encode())
        if len(breaks) != records - (0 if complete else 1):
            return None
        if end == "\r\n" and not bool(np.all(whole[breaks - 2] == ord("\r"))):
            return None  # a bare LF inside a quoted cell
        starts = np.empty(records + 1, dtype=np.int64)
        starts[0] = skip
        starts[1 : 1 + len(breaks)] = breaks
        starts[-1] = len(data)
        return cls(data, starts, encoding, end, open_end=not complete)

    def __len__(self) -> int:
        return self._base + len(self._added)

    def __getitem__(self, index: int) -> str:
        if index >= self._base:
            return self._added[index - self._base]
        if index in self._changed:
            return self._changed[index]
        data = self._data[int(self._starts[index]) : int(self._starts[index + 1])]
        line = data.decode(self._encoding)
        return line + self._end if index == self._base - 1 and self._open_end else line

    def __setitem__(self, index: int, line: str) -> None:
        if index < self._base:
            self._changed[index] = line
        else:
            self._added[index - self._base] = line

    def append(self, line: str) -> None:
        """Add a record at the end."""
        self._added.append(line)

    @property
    def changed(self) -> int:
        """How many records differ from the file's bytes."""
        return len(self._changed) + len(self._added)

    def materialize(self) -> list[str]:
        """Every record as text (once so many changed that slices no longer pay)."""
        end = self._end
        text = self._data[int(self._starts[0]) :].decode(self._encoding)
        lines = [part + end for part in text.split(end)] if self._base else []
        if not self._open_end and lines:
            lines.pop()  # after the last terminator: nothing
        for index, line in self._changed.items():
            lines[index] = line
        lines.extend(self._added)
        return lines

    def pieces(self) -> Iterator[bytes | memoryview]:
        """The records as bytes, each ending in the terminator (unchanged stretches as
        views of the file's bytes)."""
        view, starts, encoding = memoryview(self._data), self._starts, self._encoding
        at = int(starts[0])
        for index in sorted(self._changed):
            yield view[at : int(starts[index])]
            yield self._changed[index].encode(encoding)
            at = int(starts[index + 1])
        yield view[at : int(starts[-1])]
        if self._open_end and self._base - 1 not in self._changed:
            yield self._end.encode(encoding)
        for start in range(0, len(self._added), 4096):
            yield "".join(self._added[start : start + 4096]).encode(encoding)
