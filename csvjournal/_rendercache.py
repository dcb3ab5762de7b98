"""The exporter's rendered CSV: each row's record, kept in memory and in ``rows.line``.

A fresh exporter starts from the CSV on disk when that is the last export, else reads the
records the journal keeps (rendering only rows whose record is NULL because they changed
since); a running exporter re-renders only the rows changed since its last export, splices
them into its encoded records (:mod:`csvjournal._records`) and stores them back.
Stored records are valid for one ``formula_guard`` setting, kept in the ``lines_format``
setting; when it differs, everything is rendered afresh. Each stored record also says how
many columns it was rendered for (``rows.line_columns``; NULL: the count in
``lines_format``): a record of fewer columns than the CSV has now is completed as it is read
(the new columns' cells are empty, a delimiter each), so a new column voids nothing, and a
running exporter completes its records in memory instead of rendering them again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from itertools import islice

from sqlalchemy import Connection

from csvjournal import _reads
from csvjournal import _schema as t
from csvjournal._records import Records
from csvjournal._settings import read_value, write_value
from csvjournal._storedlines import lines_format, stored_columns, stored_count, stored_line
from csvjournal.csvio import CsvDialect, bom_of, render_rows

__all__ = ["SAVE_CHUNK", "RenderedCsv", "encode_chunks", "render_header", "stream_csv"]

_CHUNK = 4096  # records encoded and written at a time
# Records stored per save_lines(limit=): each is a random row of the journal, so a page of
# it written to the WAL; a few milliseconds of the journal's write lock.
SAVE_CHUNK = 256
# The rows changed by the events after a sequence number, in CSV order.
_CHANGED_ROWS = """
SELECT pos, cells, last FROM rows WHERE key IN (SELECT key FROM events WHERE seq > ?)
ORDER BY pos
"""


class RenderedCsv:
    """Each row's rendered record, in CSV order, as of sequence number :attr:`seq`."""

    def __init__(self, dialect: CsvDialect, formula_guard: bool) -> None:
        self._dialect = dialect
        self._formula_guard = formula_guard
        self._columns: list[str] = []
        self._header = ""
        self._lines = Records(dialect.encoding)
        self._positions = _Positions(None)  # rows.pos -> index in _lines
        self.seq = -1
        # pos -> the row's newest event (rows.last) when its record was rendered: records
        # to store in rows.line. Only the number: the record itself is in _lines (a full
        # rendering held twice, as text, took four times the CSV's size).
        self.unsaved: dict[int, int | None] = {}
        self.format: dict[str, object] = {}
        self.format_changed = False

    def __len__(self) -> int:
        return len(self._lines)

    def save_lines(self, conn: Connection, *, limit: int | None = None) -> None:
        """Store records rendered here in ``rows.line`` for the next exporter (a row that
        changed meanwhile keeps its NULL: its cells differ): all of them, or the ``limit``
        rendered first. Best effort: a record never saved costs the next exporter only its
        rendering. When the records' format changed, every stored record is voided first.
        """
        if not self.unsaved and not self.format_changed:
            return
        raw = t.driver(conn)
        if self.format_changed:
            raw.execute("UPDATE rows SET line = NULL WHERE line IS NOT NULL")
            write_value(conn, "lines_format", self.format)
            self.format_changed = False
        unsaved, lines, width = self.unsaved, self._lines, len(self._columns)
        base = stored_columns(read_value(conn, "lines_format"), self._formula_guard)
        if base is None or base > width:
            # Another exporter rendered every record anew since this one rendered its own
            # (an open with the other formula guard; more columns): these would not suit
            # its format (a record narrower than lines_format's count is read unchecked).
            unsaved.clear()
            return
        left = len(unsaved) if limit is None else min(limit, len(unsaved))
        while left > 0:  # in chunks: a million records never stand as text at once
            positions = list(islice(unsaved, min(left, _CHUNK)))
            found = ((pos, self._positions.get(pos, len(lines))) for pos in positions)
            kept = [(pos, index) for pos, index in found if index is not None]
            texts = lines.texts([index for _, index in kept])
            raw.executemany(
                "UPDATE rows SET line = ?, line_columns = ? WHERE pos = ? AND last IS ?",
                [
                    (text, width, pos, unsaved[pos])
                    for (pos, _), text in zip(kept, texts, strict=True)
                ],
            )
            for pos in positions:
                del unsaved[pos]
            left -= len(positions)

    def seed(self, conn: Connection, data: bytes, seq: int, rows: int) -> bool:
        """Start from the CSV this journal's exporter wrote at ``seq`` (``data``, its bytes,
        with ``rows`` records), so the next :meth:`refresh` renders only the rows changed
        since and the next export rewrites the rest from the old bytes (see
        :mod:`csvjournal._records`). Declined (``False``, nothing changed) unless each
        physical line is exactly one record of the current columns.
        """
        columns = _reads.column_names(conn)
        header = render_header(columns, self._dialect, self._formula_guard)
        raw = t.driver(conn)
        first, last, count = raw.execute("SELECT min(pos), max(pos), count(*) FROM rows").fetchone()
        if (count and last - first + 1 != count) or rows > count:
            return False
        encoding = self._dialect.encoding
        head = bom_of(self._dialect) + header.encode(encoding)
        if not data.startswith(head):
            return False
        lines = Records.from_file(data, len(head), rows, encoding, self._dialect.lineterminator)
        if lines is None:
            return False
        self._columns, self._header, self._lines = columns, header, lines
        self._positions = _Positions(first)
        self.format = lines_format(len(columns), self._formula_guard)
        self.format_changed = False
        self.seq = seq
        return True

    def refresh(self, conn: Connection) -> None:
        """Bring the rendering up to the journal's state in ``conn``'s snapshot."""
        seq = _reads.last_seq(conn)
        columns = _reads.column_names(conn)
        if self._widens(columns) and 0 <= self.seq <= seq:
            self._widen(columns)
        if columns != self._columns or self.seq < 0 or seq < self.seq:
            self._render_all(conn, columns)
        elif seq > self.seq:
            self._render_changed(conn, columns)
        self.seq = seq

    def _widens(self, columns: list[str]) -> bool:
        """Whether ``columns`` are this rendering's with new ones after them."""
        old = self._columns
        return bool(old) and len(columns) > len(old) and columns[: len(old)] == old

    def _widen(self, columns: list[str]) -> None:
        # The new columns' cells are empty in every row that no later event changed (those
        # are rendered anew next): a delimiter each before the line break, as rendered.
        added = len(columns) - len(self._columns)
        self._lines.widen(self._dialect.delimiter * added, self._dialect.lineterminator)
        self._columns = columns
        self._header = render_header(columns, self._dialect, self._formula_guard)

    def show(self, cells: dict[int, list[str]]) -> dict[int, str]:
        """Render rows (``pos -> cells``) as they are about to be, not yet in the journal;
        return what :meth:`unshow` needs to take them back."""
        if not cells:
            return {}
        lines = render_rows(cells.values(), self._dialect, formula_guard=self._formula_guard)
        before: dict[int, str] = {}
        for pos, line in zip(cells, lines, strict=True):
            index = self._positions.get(pos, len(self._lines))
            if index is not None:
                before[index] = self._lines[index]
                self._lines[index] = line
        return before

    def unshow(self, before: dict[int, str]) -> None:
        """Take back what :meth:`show` rendered."""
        for index, line in before.items():
            self._lines[index] = line

    def _render(self, rows: list[tuple[int, str, int | None]], columns: list[str]) -> list[str]:
        """Render ``(pos, cells JSON, last)`` rows; note them to store (:meth:`save_lines`)."""
        lines = list(
            render_rows(
                (_reads.cells_of(columns, cells_json) for _, cells_json, _ in rows),
                self._dialect,
                formula_guard=self._formula_guard,
            )
        )
        unsaved = self.unsaved  # a row once, with its newest record, in the order rendered
        for pos, _, last in rows:
            unsaved.pop(pos, None)
            unsaved[pos] = last
        return lines

    def _render_all(self, conn: Connection, columns: list[str]) -> None:
        self._columns = columns
        self._header = render_header(columns, self._dialect, self._formula_guard)
        self.format = lines_format(len(columns), self._formula_guard)
        base = stored_columns(read_value(conn, "lines_format"), self._formula_guard)
        self.format_changed = base is None
        stored = "NULL" if base is None else stored_line(base, len(columns), self._dialect)
        raw = t.driver(conn)
        first, last, count = raw.execute("SELECT min(pos), max(pos), count(*) FROM rows").fetchone()
        if count and last - first + 1 == count:
            # Positions without gaps (the usual case): a row's index is its position less
            # the first (no million-entry dict), so only the stored records are read, then
            # the cells of the rest; all the cells when the records' format changed.
            self._positions = _Positions(first)
            if self.format_changed:
                batches = self._lines_and_positions(raw, columns, stored)
            else:
                batches = self._stored_lines(raw, first, columns, stored)
        else:
            self._positions = _Positions(None, {})
            batches = self._lines_and_positions(raw, columns, stored)
        # Encoded as they are read: a million records never stand as a million strings.
        self._lines = Records.from_texts(batches, self._dialect.encoding)

    def _stored_lines(
        self, raw: sqlite3.Connection, first: int, columns: list[str], stored: str
    ) -> Iterator[list[str]]:
        cursor = raw.execute(f"SELECT {stored} FROM rows ORDER BY pos")
        done = 0
        while batch := cursor.fetchmany(_CHUNK):
            lines: list[str | None] = [line for (line,) in batch]
            slots = [index for index, line in enumerate(lines) if line is None]
            missing = self._cells_at(raw, [first + done + index for index in slots])
            for slot, line in zip(slots, self._render(missing, columns), strict=True):
                lines[slot] = line
            done += len(batch)
            yield lines  # type: ignore[misc]  # every slot is filled now

    def _lines_and_positions(
        self, raw: sqlite3.Connection, columns: list[str], stored: str
    ) -> Iterator[list[str]]:
        # Through the DBAPI cursor, and the cells only of rows without a valid record: a
        # SQLAlchemy row per record, or cells fetched for nothing, double the time.
        cells = "cells" if self.format_changed else f"CASE WHEN ({stored}) IS NULL THEN cells END"
        cursor = raw.execute(f"SELECT pos, {stored}, {cells}, last FROM rows ORDER BY pos")
        done = 0
        while batch := cursor.fetchmany(_CHUNK):
            for index, (pos, _, _, _) in enumerate(batch, done):
                self._positions.add(pos, index)
            lines = [None if self.format_changed else line for _, line, _, _ in batch]
            slots = [index for index, line in enumerate(lines) if line is None]
            missing = [(batch[i][0], batch[i][2], batch[i][3]) for i in slots]
            for slot, line in zip(slots, self._render(missing, columns), strict=True):
                lines[slot] = line
            done += len(batch)
            yield lines  # type: ignore[misc]  # every slot is filled now

    @staticmethod
    def _cells_at(
        raw: sqlite3.Connection, positions: list[int]
    ) -> list[tuple[int, str, int | None]]:
        found: list[tuple[int, str, int | None]] = []
        for start in range(0, len(positions), 500):  # SQLite's limit on bound parameters
            chunk = positions[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT pos, cells, last FROM rows WHERE pos IN ({marks}) ORDER BY pos"
            found.extend(raw.execute(query, chunk).fetchall())
        return found

    def _render_changed(self, conn: Connection, columns: list[str]) -> None:
        found = t.driver(conn).execute(_CHANGED_ROWS, (self.seq,)).fetchall()
        for (pos, _, _), line in zip(found, self._render(found, columns), strict=True):
            index = self._positions.get(pos, len(self._lines))
            if index is None:  # a new row: rows only ever append, in pos order
                self._positions.add(pos, len(self._lines))
                self._lines.append(line)
            else:
                self._lines[index] = line

    def chunks(self) -> Iterator[bytes]:
        """The whole file, in pieces: BOM, header, then the records' bytes."""
        return encode_chunks(self._header, self._lines.pieces(), self._dialect)


class _Positions:
    """Where each row (by ``rows.pos``) is in the rendered lines: ``pos - first`` while the
    positions have no gap (no million-entry dict to build), else a dict."""

    def __init__(self, first: int | None, index: dict[int, int] | None = None) -> None:
        self._first = first
        self._index = index if index is not None else {}

    def get(self, pos: int, count: int) -> int | None:
        """The index of ``pos`` among ``count`` lines, ``None`` for a row not there yet."""
        if self._first is not None:
            index = pos - self._first
            return index if 0 <= index < count else None
        return self._index.get(pos)

    def add(self, pos: int, index: int) -> None:
        """A new row ``pos`` at ``index`` (the end)."""
        if self._first is None:
            self._index[pos] = index
        elif pos - self._first != index:  # a gap: from now on, a dict
            self._index = {self._first + i: i for i in range(index)}
            self._index[pos] = index
            self._first = None
        elif index == 0:
            self._first = pos


def encode_chunks(
    header: str, pieces: Iterable[bytes | memoryview], dialect: CsvDialect
) -> Iterator[bytes]:
    """BOM, header, then the records' bytes, the final line break dropped if the original
    file had none (one non-empty piece is held back to know which is last)."""
    end = dialect.lineterminator.encode(dialect.encoding)
    held: bytes | memoryview = bom_of(dialect) + header.encode(dialect.encoding)
    for piece in pieces:
        if len(piece):
            yield held  # type: ignore[misc]  # write() and crc32 take either
            held = piece
    if not dialect.final_newline and bytes(held[-len(end) :]) == end:
        held = held[: -len(end)]
    yield held  # type: ignore[misc]


def render_header(columns: list[str], dialect: CsvDialect, formula_guard: bool) -> str:
    """The header line: the column names are cells too (a name may start with ``=``)."""
    return "".join(render_rows([columns], dialect, formula_guard=formula_guard))


def stream_csv(conn: Connection, dialect: CsvDialect, formula_guard: bool) -> Iterator[bytes]:
    """The whole file from ``conn``'s snapshot, a few thousand records at a time: stored
    records as they are, the others rendered on the way (memory stays small)."""
    columns = _reads.column_names(conn)
    base = stored_columns(read_value(conn, "lines_format"), formula_guard)
    line = "NULL" if base is None else stored_line(base, len(columns), dialect)
    header = render_header(columns, dialect, formula_guard)
    raw = t.driver(conn)

    width, end = len(columns), dialect.lineterminator
    count = stored_count(base or 0)
    usable = "FALSE" if base is None else f"line IS NOT NULL AND {count} <= {width}"

    def rendered(start: int, stop: int) -> str:
        # Through the DBAPI cursor, the cells only where no stored record will do.
        query = (
            f"SELECT line, {count}, CASE WHEN NOT ({usable}) THEN cells END FROM rows"
            " WHERE pos >= ? AND pos < ? ORDER BY pos"
        )
        texts: list[str] = []
        for stored, columns_stored, cells_json in raw.execute(query, (start, stop)):
            if cells_json is None:  # completed by the delimiters of the cells it lacks
                pad = dialect.delimiter * (width - columns_stored)
                texts.append(f"{stored[: -len(end)]}{pad}{end}" if pad else stored)
            else:
                row = _reads.cells_of(columns, cells_json)
                texts.extend(render_rows([row], dialect, formula_guard=formula_guard))
        return "".join(texts)

    # SQLite joins a stretch of stored records itself (a rowid range is read in order): no
    # Python object a record. While every stored record has the CSV's width they are
    # joined as they are; after a new column, completed (and their widest checked).
    widest = "0" if base == width else f"max({count})"
    joined = f"SELECT group_concat({line}, ''), count(line), count(*), {widest} FROM rows"

    def texts() -> Iterator[str]:
        first, last = raw.execute("SELECT min(pos), max(pos) FROM rows").fetchone()
        if first is None:
            return
        for start in range(first, last + 1, _CHUNK):
            stop = start + _CHUNK
            if base is not None:
                text, stored, rows, most = raw.execute(
                    f"{joined} WHERE pos >= ? AND pos < ?", (start, stop)
                ).fetchone()
                # a record to render: NULL (skipped by group_concat), or wider than now
                if stored == rows and (most or 0) <= width:
                    yield text or ""
                    continue
            yield rendered(start, stop)

    return encode_chunks(header, (text.encode(dialect.encoding) for text in texts()), dialect)
