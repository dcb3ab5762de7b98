"""Hand edits: whether the CSV on disk is one csvjournal wrote, and which.

Before each rename the exporter notes the fingerprint of the file about to appear
(``csv_pending``), and after it the one in place (``csv_digest``); a CSV matching neither
was edited by someone else, never left by an exporter killed mid-export.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from csvjournal import _reads
from csvjournal._rendercache import RenderedCsv, lines_format
from csvjournal._settings import read_value
from csvjournal.csvio import fingerprint
from csvjournal.errors import CsvChangedError
from csvjournal.store import Store

__all__ = ["check_csv"]

log = structlog.get_logger(__name__)


def check_csv(
    store: Store, csv_path: Path, rendered: RenderedCsv, formula_guard: bool
) -> int | None:
    """Refuse a CSV edited by hand; return the sequence number the CSV shows when it is
    exactly the last export and nothing changed since (else ``None``). A CSV that is one
    of the last two exports but behind the journal seeds the rendering instead."""
    if not csv_path.exists():
        return None
    with store.read() as conn:
        digest, pending = read_value(conn, "csv_digest"), read_value(conn, "csv_pending")
        exported, newest = _reads.exported_seq(conn), _reads.last_seq(conn)
        stored_format = read_value(conn, "lines_format")
        # what each known CSV shows: (sequence number, rows)
        shows = {
            pending: (
                read_value(conn, "csv_pending_seq"),
                read_value(conn, "csv_pending_rows"),
            ),
            digest: (exported, read_value(conn, "csv_rows")),
        }
        wanted_format = lines_format(len(_reads.column_names(conn)), formula_guard)
    known = {digest, pending} - {None}
    if not known:
        return None
    data = csv_path.read_bytes()
    found = fingerprint(data)
    if found not in known:
        raise CsvChangedError(
            f"{csv_path}: edited by hand since csvjournal last wrote it. Run"
            f" `csvjournal import --merge {csv_path}` to bring the edits into the"
            " journal, or delete the file to have it written anew from the journal"
        )
    if stored_format != wanted_format:
        return None
    if found == digest and exported == newest:
        return exported
    seq, rows = shows[found]
    # The last export put in place (its bookkeeping perhaps lost with its process), or
    # the one before it (its successor died before the rename), in the stored format:
    # the rendering can start from its bytes.
    if isinstance(seq, int) and isinstance(rows, int):
        with store.read() as conn:
            seeded = rendered.seed(conn, data, seq, rows)
        log.debug("csv_rendering_seeded", path=str(csv_path), seeded=seeded, seq=seq)
    return None
