"""The :class:`Journal` API and :func:`open`."""

from __future__ import annotations

import atexit
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

import structlog

from csvjournal import _forking, _reads
from csvjournal._batch import BatchState, Block, foreign_batch_error
from csvjournal._claimargs import attempts_limit
from csvjournal._interrupts import HeldInterrupts
from csvjournal._upkeep import Upkeep
from csvjournal._values import render_value, storable
from csvjournal._writer import RecordCall
from csvjournal.errors import CsvJournalError

if TYPE_CHECKING:
    from types import TracebackType

    import pandas as pd

    from csvjournal.events import Event

__all__ = ["Journal"]

log = structlog.get_logger(__name__)


class Journal(Upkeep):
    """A handle on one journal: record updates, claim work, read state, recover.

    Create it with :func:`csvjournal.open`. It is safe to share between threads; passed to
    a worker process (fork or spawn) it reopens there as a non-exporting handle.
    """

    @property
    def columns(self) -> list[str]:
        """Every column of the CSV, in order.

        Raises:
            JournalClosedError: the handle is closed.
        """
        with self._reading() as conn:
            return _reads.column_names(conn)

    # -- writing -------------------------------------------------------------------------

    def record(
        self,
        key: str,
        /,
        status: str | None = None,
        fields: Mapping[str, object] | None = None,
        **more: object,
    ) -> int:
        """Merge fields into the row ``key`` (created if new), stamp it, append an event,
        commit, and return the event's sequence number (increasing for this handle: the
        numbers of an undone block are not given again by it). New field names become new columns
        at the end of the CSV: the keyword arguments' first, then those of ``fields``, each
        in the order given (as the call ``record(k, "DONE", A=1, fields={"B c": 2})`` reads).

        Returns only when the commit is durable (per the journal's durability). Concurrent
        calls from several threads share one commit. Inside :meth:`batch` the record commits
        with the block instead.

        Raises:
            TypeError: a value of an unsupported type (the message names the field), or
                ``fields`` not a mapping.
            RecordError: an empty key, field name or status, fields contradicting the key,
                or a value for the timestamp column (it is always the time of the record).
            JournalBusyError: other writers held the journal longer than the busy timeout.
            JournalIOError: SQLite could not write the journal (a full disk, say); the
                record was not committed.
            JournalClosedError: the handle is closed.
        """
        self._ensure()
        call = RecordCall(key, status, fields, more, self._worker_name())
        seq: int = self._write(call)  # type: ignore[assignment]
        return seq

    def batch(self) -> Block[Journal]:
        """Commit every ``record()`` of this thread inside the block as one transaction.

        Nothing is committed if the block raises. A nested block is a savepoint: if it
        raises, only its own records are undone (no row, column or event is left) and the
        outer block goes on.

        Raises:
            JournalBusyError: other writers held the journal longer than the busy timeout.
            JournalIOError: SQLite could not write the journal (a full disk, say); nothing
                of the block was committed.
            JournalClosedError: the handle is closed.
        """
        return Block(self._block(), self)

    @contextmanager
    def _block(self) -> Iterator[tuple[HeldInterrupts, BatchState | None]]:
        """:meth:`batch`'s opening and end, signals held (see :class:`Block`)."""
        self._ensure()
        state = self._open_batch()
        # Signals wait (see HeldInterrupts) but in the block itself: one raising in its
        # commit, its rollback or the bookkeeping after would leave the batch half-ended.
        # One that came while the block's last records were written is handled before
        # the COMMIT (still open here: a handler's records join it); raising, it undoes
        # the block, as raising in the block does.
        if state is not None:
            if not state.here():
                raise foreign_batch_error(self.csv_path)
            with HeldInterrupts() as held, state.savepoint(held.deliver):
                yield held, None
            return
        self._commits.check_journal()  # a connection would make a new, empty file there
        if self._committer.inside():
            raise self._commits.reentered()
        with (
            HeldInterrupts() as held,
            self._gate.operation(),
            self._commits.locked(),
            self._store.engine.connect() as conn,
        ):
            state = BatchState(
                conn,
                self._writer,
                self._errors,
                self._held.note_block,
                self._commits.twin_error,
                undone=self._held.unnote,
                reentered=self._commits.reentered,
            )
            self._batches[threading.get_ident()] = state
            try:
                with state.open_here(), state.transaction(held.deliver):
                    yield held, state
                self._commits.check_journal()
            finally:
                # (a forked child that left the block reattached: a new dict of its own)
                self._batches.pop(threading.get_ident(), None)
        if self._watch is not None:
            self._watch.poke()

    # -- reading -------------------------------------------------------------------------

    def get(self, key: str) -> dict[str, str] | None:
        """The row of ``key`` as ``{column: text}`` over every CSV column, or ``None``.

        Raises:
            JournalClosedError: the handle is closed.
        """
        text = render_value(self._settings.key_column, key)
        with self._reading() as conn:
            return _reads.get(conn, text) if storable(text) else None

    def counts(self) -> dict[str, int]:
        """The number of rows per status.

        Raises:
            JournalClosedError: the handle is closed.
        """
        with self._reading() as conn:
            return _reads.counts(conn)

    def __len__(self) -> int:
        with self._reading() as conn:
            return _reads.row_count(conn)

    def pending(self, *, max_attempts: int | None = None) -> list[str]:
        """Keys of rows that are neither terminal nor held by a live lease, in CSV order
        (with ``max_attempts``: only those :meth:`claim` with it could still take).

        Raises:
            SettingsError: ``max_attempts`` below 1.
            TypeError: ``max_attempts`` not an integer.
            JournalClosedError: the handle is closed.
        """
        max_attempts = attempts_limit("pending", max_attempts)
        with self._reading() as conn:
            return _reads.pending(conn, time.time(), max_attempts)

    def history(self, key: str) -> list[Event]:
        """Every event of ``key``, oldest first (empty for an unknown key).

        Raises:
            JournalClosedError: the handle is closed.
        """
        text = render_value(self._settings.key_column, key)
        with self._reading() as conn:
            return _reads.history(conn, text) if storable(text) else []

    def to_dataframe(self) -> pd.DataFrame:
        """Every row as a pandas DataFrame of text, columns and rows in CSV order.

        Raises:
            JournalClosedError: the handle is closed.
        """
        with self._reading() as conn:
            return _reads.to_dataframe(conn)

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Give the rows this handle still holds back (``PENDING``), wait until the CSV
        shows every record, and close; closing twice is harmless.

        The wait is for a handle opened with ``export=True``: its exporter writes the last
        records; a handle standing by waits for the exporter of another handle (up to
        ``busy_timeout``, then logs ``csv_behind_at_close``), or exports them itself if
        none is left. A handle opened with ``export=False`` does not wait.

        Raises:
            BatchOpenError: called inside a ``batch()`` block of this thread (the block's
                records are not committed yet; close after it).
        """
        if self._closed and not self._closing:
            return
        if not self._committer.inside():
            self._refuse_in_batch("close")
        self._closed = True  # no new record, batch or claim from here on
        self._closing = True  # until done: a close a signal cut short is taken up again
        if self._committer.inside():
            # A signal handler's, run while its thread commits (Ctrl-C pressed twice while
            # the journal was busy): the waits below would be for that commit, under this
            # call. The handle takes no new call; the next close (at exit, if no other)
            # does the rest, once the commit is over.
            return
        with HeldInterrupts() as held:
            if self._pid == _forking.PID:
                # (waits of up to busy_timeout: a signal cutting one short is handled then,
                # and the next close takes this one up again)
                with held.released():
                    self._held.wait_for_claims(self._options.busy_timeout)  # those under way
                if self._held:
                    try:
                        self._release(self._held.every(), "released")
                    except CsvJournalError as exc:  # their leases run out instead
                        log.warning("claims_not_released", path=str(self.csv_path), error=str(exc))
                with held.released():
                    self._wait_for_writes()
            self._shut()
            self._closing = False

    def _wait_for_writes(self) -> None:
        """Let the batches and commits of other threads that began before the close end:
        their records must reach the CSV too (up to ``busy_timeout``)."""
        if self._write_lock.acquire(timeout=self._options.busy_timeout):
            self._write_lock.release()
        else:
            log.warning("writes_in_flight_at_close", path=str(self.csv_path))

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Journal {str(self._options.csv_path)!r} {state}>"


def _close_at_exit() -> None:
    # A program that never closed its journal still gets its last records into the CSV:
    # the exporters last, after the other handles gave their claims back.
    journals = [handle for handle in _forking.registered() if isinstance(handle, Journal)]
    for journal in sorted(journals, key=lambda handle: handle._options.export):
        journal.close()


atexit.register(_close_at_exit)
