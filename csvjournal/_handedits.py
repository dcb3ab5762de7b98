"""Hand edits: whether the CSV on disk is one csvjournal wrote, and which.

Before each rename the exporter notes the fingerprint of the file about to appear
(``csv_pending``), and after it the one in place (``csv_digest``); a CSV matching neither
was edited by someone else, never left by an exporter killed mid-export.
"""

from __future__ import annotations

import json
import os
import shlex
import sqlite3
from pathlib import Path

import structlog
from sqlalchemy import Connection

from csvjournal import _reads
from csvjournal._rendercache import RenderedCsv
from csvjournal._settings import forget_values, read_value, write_value
from csvjournal._storedlines import stored_columns
from csvjournal.csvio import fingerprint
from csvjournal.errors import CsvChangedError
from csvjournal.store import Store

__all__ = ["CsvGuard", "block", "blocked_by", "check_csv", "file_identity", "refuse_hand_edits"]

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
        # the formula guard each was written with (None: not known, a hand edit, say)
        guards = {
            pending: read_value(conn, "csv_pending_guard"),
            digest: read_value(conn, "csv_guard"),
        }
    known = {digest, pending} - {None}
    if not known:
        return None
    data = csv_path.read_bytes()
    found = fingerprint(data)
    if found not in known:
        raise _edited_error(csv_path)
    if found == pending and found != digest:
        _note_placed(store, found)
    if stored_columns(stored_format, formula_guard) is None:
        return None  # the stored records were rendered for the other formula guard
    if guards.get(found) not in (None, formula_guard):
        return None  # written with the other formula guard (its stored records unsaved)
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


def refuse_hand_edits(conn: sqlite3.Connection, csv_path: Path) -> None:
    """Refuse a CSV that is neither export the journal notes, reading only the settings
    table (the same in every schema revision: fit to run before an upgrade, which an open
    refused for the CSV must not make). A journal that notes no export (one of the first
    revision, say) refuses nothing.

    Raises:
        CsvChangedError: the CSV was edited by hand since csvjournal last wrote it.
    """
    found = conn.execute(
        "SELECT value FROM settings WHERE name IN ('csv_digest', 'csv_pending')"
    ).fetchall()
    known = {json.loads(value) for (value,) in found}
    if known and csv_path.exists() and fingerprint(csv_path.read_bytes()) not in known:
        raise _edited_error(csv_path)


def _edited_error(csv_path: Path) -> CsvChangedError:
    return CsvChangedError(
        f"{csv_path}: edited by hand since csvjournal last wrote it. Run"
        f" `csvjournal import --merge {shlex.quote(str(csv_path))}` to bring the edits into the"
        " journal, or delete the file to have it written anew from the journal"
    )


# What the last export put in place shows, and where a pending export's notes go.
_PLACED_FROM_PENDING = (
    ("csv_digest", "csv_pending"),
    ("csv_seq", "csv_pending_seq"),
    ("csv_rows", "csv_pending_rows"),
    ("csv_guard", "csv_pending_guard"),
    ("csv_guard_rules", "csv_pending_guard_rules"),
)


def _note_placed(store: Store, found: str) -> None:
    """Note the CSV, export ``found`` that its exporter put in place and died before noting,
    as the last export. Else the next export's ``csv_pending`` would be the only note of
    it, and, killed before its rename too, leave a CSV that no note knows: a hand edit to
    every open after, though csvjournal wrote it."""
    with store.write() as conn:
        if read_value(conn, "csv_pending") != found:
            return  # another take-over noted it, or exported since
        for placed, pending in _PLACED_FROM_PENDING:
            value = read_value(conn, pending)
            if value is None:
                forget_values(conn, placed)
            else:
                write_value(conn, placed, value)
    log.info("csv_export_noted_after_crash", fingerprint=found)


_CHANGED_WHILE_RUNNING = (
    "{path}: edited by hand while csvjournal kept it; the CSV is not updated until the"
    " edits are in the journal. Run `csvjournal import --merge {command_path}` to bring them in, or"
    " delete the file to have it written anew from the journal"
)


class CsvGuard:
    """The CSV an exporter put in place, so that a hand edit made while it runs is not
    overwritten by its next export (an edit is refused at open; this refuses it later).

    One ``stat`` per check tells the file this exporter left from any other (inode, size and
    modification time); only another file is read, and it passes when its fingerprint is
    one the journal knows (the last export, the one about to appear, or an edited file
    that ``merge_csv`` brought in). A file refused is not read again while neither it nor
    the journal's known fingerprints change.
    """

    def __init__(self, store: Store, csv_path: Path) -> None:
        self._store = store
        self._csv_path = csv_path
        self._placed: tuple[int, ...] | None = None
        self._refused: tuple[tuple[int, ...], frozenset[object]] | None = None

    def placed(self, renamed: os.stat_result | None = None) -> None:
        """The CSV on disk now is one csvjournal wrote or checked (or there is none); given
        ``renamed``, the status of the file this exporter just renamed there: a save by
        another program right after the rename is no file of ours, even if made before
        this call."""
        self._placed = (
            file_identity(self._csv_path) if renamed is None else _status_identity(renamed)
        )
        self._refused = None

    def moved(self) -> bool:
        """Whether the CSV on disk changed size or modification time since it was placed
        or last passed (one ``stat``): an edit, or a file the journal knows; :meth:`check`
        tells. (Not the inode number, which some network file systems make up anew: a
        CSV on one would be read at every look.)"""
        identity = file_identity(self._csv_path)
        return identity is not None and (self._placed is None or identity[2:] != self._placed[2:])

    def still_refused(self, conn: Connection) -> bool:
        """Whether the file :meth:`check` refused is still unknown to the journal (read in
        ``conn``): a merge of it since makes it known, and the refusal is void."""
        known = frozenset({read_value(conn, "csv_digest"), read_value(conn, "csv_pending")})
        return self._refused is not None and self._refused[1] == known

    def check(self) -> None:
        """Refuse to replace the CSV on disk if it was edited by hand since :meth:`placed`.

        Raises:
            CsvChangedError: the CSV is neither the one placed nor one the journal knows.
        """
        identity = file_identity(self._csv_path)
        if identity is None or identity == self._placed:
            return
        with self._store.read() as conn:
            known = frozenset({read_value(conn, "csv_digest"), read_value(conn, "csv_pending")})
        if self._refused != (identity, known):
            with self._csv_path.open("rb") as file:
                found = fingerprint(iter(lambda: file.read(1 << 20), b""))
            if found in known:
                self._placed, self._refused = identity, None
                return
            self._refused = (identity, known)
        raise CsvChangedError(
            _CHANGED_WHILE_RUNNING.format(
                path=self._csv_path, command_path=shlex.quote(str(self._csv_path))
            )
        )


def block(conn: Connection, csv_path: Path, error: str) -> tuple[int, ...] | None:
    """Note that a hand edit of the CSV on disk stops the exports (inside ``conn``'s write
    transaction), for :func:`blocked_by` in any process; return the file noted (see
    :func:`file_identity`)."""
    identity = file_identity(csv_path)
    write_value(conn, "csv_blocked", {"file": identity, "error": error})
    return identity


def blocked_by(conn: Connection, csv_path: Path) -> str | None:
    """The error of the hand edit that stops the exports, while the CSV is still that file
    (a note left by an exporter that died, or about a file since deleted or replaced, is
    void); else None."""
    note = read_value(conn, "csv_blocked")
    if not isinstance(note, dict):
        return None
    current = file_identity(csv_path)
    if current is None or list(current) != note.get("file"):
        return None
    return str(note.get("error"))


def file_identity(path: Path) -> tuple[int, ...] | None:
    """What tells the file at ``path`` from any other without reading it (None: none)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return _status_identity(stat)


def _status_identity(stat: os.stat_result) -> tuple[int, ...]:
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns
