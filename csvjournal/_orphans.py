"""Exports by a non-exporting handle while no exporter is alive.

Worker processes reopen a journal as non-exporting handles; the exporter is the parent's.
If the parent dies (kill -9) while its workers go on, nobody would write the CSV until the
next exporting open: the workers could finish the whole job with the sheet frozen where
the parent left it. So after its commits a non-exporting handle looks, at most once a
second, whether any process holds the exporter lock; if none does, it writes the CSV
itself, as :meth:`Journal.flush` does (it takes the lock for the export: still one writer
of the CSV at a time), in a thread of its own so that no ``record()`` waits for it. A
commit made while that thread runs is exported by its next round, so the last commits of
a job reach the CSV too. The rounds are spaced by five times the last export's length at
least: a big CSV costs the workers a fifth of a core at most.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from csvjournal import _reads
from csvjournal._flush import export_here
from csvjournal._forking import ForkGate
from csvjournal._oslock import exporter_alive
from csvjournal._settings import Settings
from csvjournal.store import Store

__all__ = ["OrphanWatch", "export_if_behind"]

log = structlog.get_logger(__name__)

INTERVAL_SECONDS = 1.0
_EXPORT_SHARE = 5  # rounds at least this many times an export's length apart


class OrphanWatch:
    """The watch of one non-exporting handle (see the module's docstring)."""

    def __init__(self, csv_path: Path, export: Callable[[], object]) -> None:
        self._csv_path = csv_path
        self._export = export  # writes the CSV if it gets the exporter lock
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._dirty = False  # a commit since the running round began
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
            self._thread.start()

    def _rounds(self) -> None:
        # a second after the first commit: a handle that closes sooner writes at its close
        self._closed.wait(INTERVAL_SECONDS)
        while True:
            with self._lock:
                if not self._dirty or self._closed.is_set():
                    self._thread = None
                    return
                self._dirty = False
            started = time.monotonic()
            self._round()
            spent = time.monotonic() - started
            self._closed.wait(max(INTERVAL_SECONDS, _EXPORT_SHARE * spent))

    def _round(self) -> None:
        try:
            if exporter_alive(self._csv_path):
                return
            self._export()
        except Exception as exc:  # the next round tries again; the job goes on
            if str(exc) != self._failed:  # once, not each second (a hand edit, say)
                log.warning("orphan_export_failed", path=str(self._csv_path), error=str(exc))
            self._failed = str(exc)
        else:
            self._failed = None

    def close(self, timeout: float = 30.0) -> None:
        """Stop: wait for a round under way (its export) to end; then, if this handle
        committed since, one last round here (a worker's last records, written as it
        closes)."""
        self._closed.set()
        with self._lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with self._lock:
            last, self._dirty = self._dirty, False
        if last:
            self._round()

    def forget_after_fork(self) -> None:
        """In a forked child: no round runs here (the parent's thread was not copied)."""
        self._lock = threading.Lock()
        self._thread = None
        self._dirty = False


def export_if_behind(store: Store, settings: Settings, csv_path: Path, gate: ForkGate) -> None:
    """Write the CSV from this handle when it is behind the journal (or missing) and no
    exporter holds the lock; a current CSV costs one read of the journal, not of the file.

    Raises:
        OSError, UnicodeError: the export failed.
        CsvChangedError: the CSV was edited by hand.
    """
    with gate.operation():
        with store.read() as conn:
            exported = _reads.exported_seq(conn)
            current = exported is not None and exported >= _reads.last_seq(conn)
        if current and csv_path.exists():
            return
        export_here(store, settings, csv_path, settings.formula_guard)
