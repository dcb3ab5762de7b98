"""The exporter's rendered CSV, kept in memory and refreshed from the events since the last
export, so a re-export renders only the rows that changed."""

from __future__ import annotations

from sqlalchemy import Connection, select

from csvjournal import _reads
from csvjournal import _schema as t
from csvjournal.csvio import CsvDialect, encode_csv, render_rows

__all__ = ["RenderedCsv"]


class RenderedCsv:
    """Each row's rendered record, in CSV order, as of sequence number :attr:`seq`."""

    def __init__(self, dialect: CsvDialect, formula_guard: bool) -> None:
        self._dialect = dialect
        self._formula_guard = formula_guard
        self._columns: list[str] = []
        self._header = ""
        self._lines: list[str] = []
        self._index: dict[int, int] = {}  # rows.pos -> index in _lines
        self.seq = -1

    def __len__(self) -> int:
        return len(self._lines)

    def refresh(self, conn: Connection) -> None:
        """Bring the rendering up to the journal's state in ``conn``'s snapshot."""
        seq = _reads.last_seq(conn)
        columns = _reads.column_names(conn)
        if columns != self._columns or self.seq < 0 or seq < self.seq:
            self._render_all(conn, columns)
        elif seq > self.seq:
            self._render_changed(conn, columns)
        self.seq = seq

    def _render(self, cells: list[list[str]]) -> list[str]:
        return list(render_rows(cells, self._dialect, formula_guard=self._formula_guard))

    def _render_all(self, conn: Connection, columns: list[str]) -> None:
        self._columns = columns
        self._header = "".join(render_rows([columns], self._dialect))
        query = select(t.rows.c.pos, t.rows.c.cells).order_by(t.rows.c.pos)
        positions: list[int] = []
        cells: list[list[str]] = []
        for pos, cells_json in conn.execute(query):
            positions.append(pos)
            cells.append(_reads.cells_of(columns, cells_json))
        self._lines = self._render(cells)
        self._index = {pos: i for i, pos in enumerate(positions)}

    def _render_changed(self, conn: Connection, columns: list[str]) -> None:
        changed = select(t.events.c.key).where(t.events.c.seq > self.seq).distinct()
        query = (
            select(t.rows.c.pos, t.rows.c.cells)
            .where(t.rows.c.key.in_(changed))
            .order_by(t.rows.c.pos)
        )
        found = list(conn.execute(query))
        lines = self._render([_reads.cells_of(columns, cells_json) for _, cells_json in found])
        for (pos, _), line in zip(found, lines, strict=True):
            index = self._index.get(pos)
            if index is None:  # a new row: rows only ever append, in pos order
                self._index[pos] = len(self._lines)
                self._lines.append(line)
            else:
                self._lines[index] = line

    def to_bytes(self) -> bytes:
        """The whole file in the dialect's encoding, BOM and final line break."""
        return encode_csv(self._header + "".join(self._lines), self._dialect)
