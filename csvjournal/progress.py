"""How far a job is: counts, rate, ETA, the exporter and the CSV's freshness."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Connection, text

from csvjournal import _reads
from csvjournal._atomicfile import fingerprint
from csvjournal._handedits import blocked_by
from csvjournal._oslock import exporter, exporter_alive
from csvjournal._pids import stopped
from csvjournal._settings import read_value
from csvjournal._values import parse_timestamp

if TYPE_CHECKING:
    from pathlib import Path

    from csvjournal.journal import Journal

__all__ = ["Progress", "exporter_alive", "progress"]

_RATE_WINDOW_SECONDS = 60.0
_RATE_EVENTS = 20_000
# Each recent event with the status its row had before it (NULL for a row's first event).
_RECENT = """
SELECT e.at, e.status, p.status FROM events AS e LEFT JOIN events AS p ON p.seq = e.prev
WHERE e.seq > :first ORDER BY e.seq
"""
_LEASED = "SELECT count(*) FROM rows WHERE done = 0 AND lease_until > :now AND holder IS NOT NULL"


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot of a journal's job (see :func:`progress`).

    ``rate`` is rows finished (a terminal status recorded) per second over the last minute,
    ``eta_seconds`` the time left at that rate (``None`` when nothing finished lately);
    ``csv_exists`` tells whether the CSV is on disk at all (a deleted one is written anew
    by the next exporting open), ``csv_current`` whether it shows every commit (never when
    it is missing), ``csv_age_seconds`` how long ago it was last written, and
    ``csv_edited_by_hand`` whether the CSV was edited by hand: an edit made while the
    exporter ran stopped its exports, or, with no exporter running, the file on disk is
    none csvjournal wrote (until ``csvjournal import --merge`` or the file's deletion).
    """

    rows: int
    counts: dict[str, int]
    terminal: list[str]
    done: int
    pending: int
    in_progress: int
    percent_done: float
    rate: float | None
    eta_seconds: float | None
    last_seq: int
    exported_seq: int | None
    csv_exists: bool
    csv_current: bool
    csv_age_seconds: float | None
    csv_edited_by_hand: bool
    exporter_alive: bool
    # the CSV was written from the journal, but with the other formula guard (an open
    # turned it on or off since): then ``exported_seq`` is None too
    csv_shows_other_guard: bool = False
    # the process that exports (None: none, or unknown), and whether it is stopped (SIGSTOP,
    # Ctrl-Z): alive, but exporting nothing until resumed
    exporter_pid: int | None = None
    exporter_stopped: bool = False
    # the events the CSV does not show yet (sequence numbers of undone blocks are skipped:
    # not the difference of the two numbers)
    events_behind: int = 0

    def to_dict(self) -> dict[str, object]:
        """The snapshot as plain JSON-ready data."""
        return asdict(self)


def progress(journal: Journal) -> Progress:
    """Take a :class:`Progress` snapshot of ``journal``.

    Raises:
        JournalClosedError: the handle is closed.
    """
    terminal = journal.settings.terminal
    now = time.time()
    with journal._reading() as conn:
        counts = _reads.counts(conn)
        pending = _reads.pending_count(conn, now)
        leased = int(conn.execute(text(_LEASED), {"now": now}).scalar_one())
        last = _reads.last_seq(conn)
        exported = _reads.exported_seq(conn)
        behind = 0 if exported is not None and exported >= last else _events_after(conn, exported)
        other_guard = exported is None and read_value(conn, "csv_seq") is not None
        found = conn.execute(text(_RECENT), {"first": max(0, last - _RATE_EVENTS)})
        recent = [(str(at), str(status), before) for at, status, before in found]
        edited = blocked_by(conn, journal.csv_path) is not None
        known = {read_value(conn, "csv_digest"), read_value(conn, "csv_pending")} - {None}
    alive, pid = exporter(journal.csv_path)
    if not edited and not alive:  # no exporter to notice an edit: look at the file
        edited = _unknown_file(journal.csv_path, known)
    rows = sum(counts.values())
    done = sum(n for status, n in counts.items() if status in terminal)
    rate = _rate(recent, terminal, now)
    left = rows - done
    try:
        age: float | None = max(0.0, now - journal.csv_path.stat().st_mtime)
    except FileNotFoundError:
        age = None
    return Progress(
        rows=rows,
        counts=dict(sorted(counts.items())),
        terminal=sorted(terminal),
        done=done,
        pending=pending,
        in_progress=leased,
        percent_done=round(100.0 * done / rows, 2) if rows else 100.0,
        rate=rate,
        eta_seconds=round(left / rate, 1) if rate else (0.0 if left == 0 else None),
        last_seq=last,
        exported_seq=exported,
        csv_exists=age is not None,
        # the journal's note of the last export says nothing of a file deleted since
        csv_current=age is not None and exported is not None and exported >= last and not edited,
        csv_age_seconds=None if age is None else round(age, 3),
        csv_edited_by_hand=edited,
        exporter_alive=alive,
        exporter_pid=pid,
        exporter_stopped=pid is not None and stopped(pid),
        csv_shows_other_guard=other_guard,
        events_behind=behind,
    )


def _events_after(conn: Connection, seq: int | None) -> int:
    found = conn.execute(text("SELECT count(*) FROM events WHERE seq > :seq"), {"seq": seq or 0})
    return int(found.scalar_one())


def _unknown_file(csv_path: Path, known: set[object]) -> bool:
    """Whether the CSV on disk is none of the files the journal knows (a hand edit): its
    size tells most edits apart without reading it."""
    sizes = {str(digest).split(":", 1)[0] for digest in known}
    try:
        size = csv_path.stat().st_size
        if not known or str(size) not in sizes:
            return bool(known)
        with csv_path.open("rb") as file:
            found = fingerprint(iter(lambda: file.read(1 << 20), b""))
    except FileNotFoundError:
        return False
    return found not in known


def _rate(
    recent: list[tuple[str, str, str | None]], terminal: frozenset[str], now: float
) -> float | None:
    """Rows finished per second over the last minute: events that made a row terminal
    (not a further record on a row already done). A clock behind the events' (another
    host's, or one set back) measures the minute up to the newest event instead."""
    if not recent:
        return None
    end = max(now, parse_timestamp(recent[-1][0]).timestamp())
    since = end - _RATE_WINDOW_SECONDS
    finished = [
        stamp
        for at, status, before in recent
        if status in terminal
        and before not in terminal
        and since <= (stamp := parse_timestamp(at).timestamp()) <= end
    ]
    if not finished:
        return None
    span = max(1.0, end - min(finished))
    return round(len(finished) / span, 3)
