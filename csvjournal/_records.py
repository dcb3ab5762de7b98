"""The exporter's CSV records, kept encoded, in pieces: what each export writes, patched.

Records are held as the bytes the file holds, :data:`PIECE` records to a piece, with each
record's length. An export writes the pieces as they are; a record that changed is spliced
into its piece (one splice a piece, however many of its records changed), so an export
after a few changes encodes only those. A million records cost about the CSV's size in
memory, not a million string objects.

After a crash the pieces can be the crashed job's CSV itself (:meth:`Records.from_file`):
numpy finds where each record starts at memory speed, a tenth of the time of reading a
million stored records back from the journal.
"""

from __future__ import annotations

import codecs
from array import array
from collections.abc import Iterable, Iterator
from itertools import accumulate

__all__ = ["PIECE", "Records"]

PIECE = 512  # records a piece


def _ascii_compatible(encoding: str) -> bool:
    """Whether ASCII text is the same bytes in ``encoding`` and no other character holds
    a byte below 128 (so CR and LF are one byte each, found by a byte search)."""
    name = codecs.lookup(encoding).name
    return name in {"utf-8", "ascii"} or name.startswith(("iso8859-", "cp125"))


class Records:
    """A CSV's records (each ending in the line terminator), encoded, in pieces."""

    def __init__(self, encoding: str) -> None:
        self._encoding = encoding
        self._ascii = _ascii_compatible(encoding)
        self._pieces: list[bytes | memoryview] = []
        self._lengths: list[array[int]] = []  # per piece, each record's length in bytes
        self._encoded = 0  # records in the pieces
        self._changed: dict[int, str] = {}  # index -> text not yet spliced in
        self._added: list[str] = []  # records after the pieces, not yet encoded

    @classmethod
    def from_texts(cls, texts: Iterable[list[str]], encoding: str) -> Records:
        """Records from lists of texts (any sizes), in order."""
        records = cls(encoding)
        for batch in texts:
            records._added.extend(batch)
            if len(records._added) >= PIECE:
                records._encode_added()
        return records

    @classmethod
    def from_file(
        cls, data: bytes, skip: int, count: int, encoding: str, end: str
    ) -> Records | None:
        """The records of a CSV file's bytes after its first ``skip`` (BOM and header),
        each ending in ``end`` but perhaps the last; ``None`` unless there are exactly
        ``count`` (a line break inside a quoted cell makes more), or when the encoding
        or the line terminator cannot be found byte by byte."""
        if not _ascii_compatible(encoding) or end not in ("\n", "\r\n", "\r"):
            return None
        import numpy as np  # here: most processes never read a CSV back

        whole = np.frombuffer(data, dtype=np.uint8)
        breaks = np.flatnonzero(whole[skip:] == ord(end[-1])) + (skip + 1)
        complete = len(data) == skip or data.endswith(end.encode())
        if len(breaks) != count - (0 if complete else 1):
            return None
        if end == "\r\n" and not bool(np.all(whole[breaks - 2] == ord("\r"))):
            return None  # a bare LF inside a quoted cell
        starts = np.empty(count + 1, dtype=np.int64)
        starts[0], starts[-1] = skip, len(data)
        starts[1 : 1 + len(breaks)] = breaks
        lengths = np.diff(starts).astype(np.uint32)
        records = cls(encoding)
        view = memoryview(data)
        for first in range(0, count, PIECE):
            last = min(first + PIECE, count)
            records._pieces.append(view[int(starts[first]) : int(starts[last])])
            records._lengths.append(array("I", lengths[first:last].tobytes()))
        records._encoded = count
        if not complete:  # the file's last record has no terminator; ours all have one
            records._pieces[-1] = bytes(records._pieces[-1]) + end.encode()
            records._lengths[-1][-1] += len(end)
        return records

    def __len__(self) -> int:
        return self._encoded + len(self._added)

    def __getitem__(self, index: int) -> str:
        if index >= self._encoded:
            return self._added[index - self._encoded]
        if index in self._changed:
            return self._changed[index]
        piece, at = divmod(index, PIECE)
        lengths = self._lengths[piece]
        start = sum(lengths[:at])
        data = self._pieces[piece][start : start + lengths[at]]
        return bytes(data).decode(self._encoding)

    def texts(self, indexes: list[int]) -> list[str]:
        """The records at ``indexes``, decoded: each piece's offsets summed once, however
        many of its records are asked for."""
        found: list[str] = []
        starts: array[int] | None = None
        piece_at = -1
        for index in indexes:
            if index >= self._encoded or index in self._changed:
                found.append(self[index])
                continue
            piece, at = divmod(index, PIECE)
            if piece != piece_at:
                piece_at, starts = piece, array("Q", accumulate(self._lengths[piece], initial=0))
            assert starts is not None
            data = self._pieces[piece][starts[at] : starts[at + 1]]
            found.append(bytes(data).decode(self._encoding))
        return found

    def __setitem__(self, index: int, text: str) -> None:
        if index >= self._encoded:
            self._added[index - self._encoded] = text
        else:
            self._changed[index] = text

    def append(self, text: str) -> None:
        """Add a record at the end."""
        self._added.append(text)

    def widen(self, pad: str, end: str) -> None:
        """Put ``pad`` before the line terminator ``end`` of every record: each record
        with empty cells appended (``pad`` is their delimiters), byte for byte what
        rendering it again would give, at memory speed."""
        import numpy as np  # here: most processes never add a column to a big CSV

        self._splice()
        self._encode_added()
        padding = np.frombuffer(pad.encode(self._encoding), dtype=np.uint8)
        tail = len(end.encode(self._encoding))
        for index, (piece, lengths) in enumerate(zip(self._pieces, self._lengths, strict=True)):
            ends = np.cumsum(np.frombuffer(lengths, dtype=np.uint32), dtype=np.int64)
            at = np.repeat(ends - tail, len(padding))  # each byte of the padding, in order
            data = np.frombuffer(piece, dtype=np.uint8)
            self._pieces[index] = np.insert(data, at, np.tile(padding, len(lengths))).tobytes()
            self._lengths[index] = array("I", [length + len(padding) for length in lengths])

    def pieces(self) -> Iterator[bytes | memoryview]:
        """Every record's bytes, in order, in pieces (changes spliced in first)."""
        self._splice()
        self._encode_added()
        return iter(self._pieces)

    def _encode(self, texts: list[str]) -> tuple[bytes, array[int]]:
        joined = "".join(texts)
        if self._ascii and joined.isascii():  # a character a byte: no encoding one by one
            return joined.encode("ascii"), array("I", map(len, texts))
        encoded = [text.encode(self._encoding) for text in texts]
        return b"".join(encoded), array("I", map(len, encoded))

    def _encode_added(self) -> None:
        added, self._added = self._added, []
        while added:
            if not self._pieces or len(self._lengths[-1]) == PIECE:
                self._pieces.append(b"")
                self._lengths.append(array("I"))
            room = PIECE - len(self._lengths[-1])
            data, lengths = self._encode(added[:room])
            del added[:room]
            self._pieces[-1] = bytes(self._pieces[-1]) + data
            self._lengths[-1].extend(lengths)
            self._encoded += len(lengths)

    def _splice(self) -> None:
        by_piece: dict[int, list[int]] = {}
        for index in sorted(self._changed):
            by_piece.setdefault(index // PIECE, []).append(index)
        for piece, indexes in by_piece.items():
            lengths = self._lengths[piece]
            view = memoryview(self._pieces[piece])
            parts: list[bytes | memoryview] = []
            at = 0  # in the old piece: the end of what is taken so far
            done = 0  # slots before it
            for index in indexes:
                slot = index - piece * PIECE
                start = at + sum(lengths[done:slot])  # C-speed, unlike a list of every start
                data, (length,) = self._encode([self._changed[index]])
                parts += (view[at:start], data)
                at, done = start + lengths[slot], slot + 1
                lengths[slot] = length
            parts.append(view[at:])
            self._pieces[piece] = b"".join(parts)
        self._changed.clear()
