"""Exports by a worker's handle while no exporter is alive.

A journal passed to a worker process reopens there as a non-exporting handle; the exporter
is the parent's. If the parent dies (kill -9) while its workers go on, nobody would write
the CSV until the next exporting open: the workers could finish the whole job with the
sheet frozen where the parent left it. So after its commits such a handle looks, at most
once a second, whether any process holds the exporter lock; if none does, it writes the
CSV itself, as :meth:`Journal.flush` does (taking the lock for the export: still one
writer of the CSV at a time), in a thread of its own so that no ``record()`` waits for it.
A round that failed (a full disk) is tried again a second later; the rounds are spaced by
five times the last export's length at least (a big CSV costs a fifth of a core at most).
When the handle closes, including when a ``multiprocessing`` worker exits (a finalizer,
see :func:`csvjournal._forking.reopened`), it flushes: the last commits reach the CSV,
whoever writes it, unless an exporter stays busy for longer than the close waits.

Handles opened with ``export=False`` by the program itself do not watch: the program
chose not to write the CSV from them (``flush()`` still exports when nobody does).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import structlog

from csvjournal import _reads
from csvjournal._flush import export_here, flush_csv
from csvjournal._forking import ForkGate
from csvjournal._interrupts import start_thread
from csvjournal._oslock import exporter_alive
from csvjournal._settings import Settings
from csvjournal.errors import CsvJournalError
from csvjournal.store import Store

__all__ = ["OrphanWatch"]

log = structlog.get_logger(__name__)

INTERVAL_SECONDS = 1.0
CLOSE_SECONDS = 10.0  # how long a closing worker waits for its last commits to be shown
_EXPORT_SHARE = 5  # rounds at least this many times an export's length apart


class OrphanWatch:
    """The watch of one worker's handle (see the module's docstring)."""

    def __init__(self, store: Store, settings: Settings, csv_path: Path, gate: ForkGate) -> None:
        self._store = store
        self._settings = settings
        self._csv_path = csv_path
        self._gate = gate
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._dirty = False  # a commit not yet looked after by a round
        self._closed = threading.Event()
        self._failed: str | None = None  # the last round's error, logged once

    def poke(self) -> None:
        """Note a commit of this handle (cheap while a round is under way)."""
        if self._dirty and self._thread is not None:
            return
        with self._lock:
            self._dirty = True
            if self._thread is not None or self._closed.is_set():
                return
            self._thread = threading.Thread(
                target=self._rounds, name="csvjournal-orphan-export", daemon=True
            )
            start_thread(self._thread)

    def _rounds(self) -> None:
        while not self._closed.wait(INTERVAL_SECONDS):
            with self._lock:
                if not self._dirty:
                    self._thread = None
                    return
                self._dirty = False
            started = time.monotonic()
            if not self._round():
                with self._lock:
                    self._dirty = True  # tried again at the next round
            spent = time.monotonic() - started
            if self._closed.wait(max(0.0, (_EXPORT_SHARE - 1) * spent)):
                return

    def _round(self) -> bool:
        """Export if no exporter is alive and the CSV is behind; False if that failed."""
        try:
            if not exporter_alive(self._csv_path):
                self._export_if_behind()
        except Exception as exc:  # the job goes on
            if str(exc) != self._failed:  # once, not each second (a hand edit, say)
                log.warning("orphan_export_failed", path=str(self._csv_path), error=str(exc))
            self._failed = str(exc)
            return False
        self._failed = None
        return True

    def _export_if_behind(self) -> None:
        with self._gate.operation():
            with self._store.read() as conn:  # current: no export (nor its read of the CSV)
                exported = _reads.exported_seq(conn)
                current = exported is not None and exported >= _reads.last_seq(conn)
            if not current or not self._csv_path.exists():
                export_here(
                    self._store, self._settings, self._csv_path, self._settings.formula_guard
                )

    def close(self) -> None:
        """Stop the rounds; if this handle committed since the last one, wait (up to
        :data:`CLOSE_SECONDS`) until the CSV shows its commits, exporting if nobody does."""
        self._closed.set()
        with self._lock:
            thread, last = self._thread, self._dirty
            self._dirty = False
        if thread is not None and thread is not threading.current_thread():
            thread.join(CLOSE_SECONDS)
        if not last and self._failed is None:
            return
        try:
            flush_csv(
                self._store,
                self._settings,
                self._csv_path,
                None,
                formula_guard=self._settings.formula_guard,
                timeout=CLOSE_SECONDS,
                gate=self._gate,
            )
        except CsvJournalError as exc:  # its records are safe; the next exporter shows them
            log.warning("csv_behind_at_close", path=str(self._csv_path), error=str(exc))

    def forget_after_fork(self) -> None:
        """In a forked child: no round runs here (the parent's thread was not copied)."""
        self._lock = threading.Lock()
        self._thread = None
        self._dirty = False
