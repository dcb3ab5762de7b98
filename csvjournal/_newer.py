"""Which records are newer than the version of a row that a (hand-edited) sheet shows.

A merge must not write a sheet's old values over what the job recorded after the sheet was
exported (:mod:`csvjournal.merge`). A row's version is its timestamp cell: the time of its
last record when exported, or, re-formatted by a spreadsheet, the row's newest record in
the minute shown (:mod:`csvjournal._shownstamp`); without one, the last export.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping

from sqlalchemy import Connection

from csvjournal import _schema as t
from csvjournal._settings import Settings
from csvjournal._shownstamp import stamp_windows
from csvjournal._writer import PENDING

__all__ = ["MERGE_WORKER", "changed_after", "changed_since", "shown"]

# The worker of a merge's records: they hold the file's values, not newer ones.
MERGE_WORKER = "csvjournal-merge"


def changed_since(conn: Connection, base: int | None, status_column: str) -> dict[str, set[str]]:
    """Per key, the fields that records after event ``base`` changed (``status_column`` for
    a change of status); nothing when the export ``base`` is unknown."""
    if base is None:
        return {}
    changed: dict[str, set[str]] = {}
    for key, status, fields, before in t.driver(conn).execute(_CHANGED_SINCE, (base, MERGE_WORKER)):
        names = changed.setdefault(key, set())
        names.update(json.loads(fields))
        if status != (before or PENDING):
            names.add(status_column)
    return changed


# Each later event with the status of the row's event before it (PENDING before the first).
_CHANGED_SINCE = """
SELECT e.key, e.status, e.fields, p.status FROM events AS e LEFT JOIN events AS p ON p.seq = e.prev
WHERE e.seq > ? AND e.worker != ? ORDER BY e.seq
"""
_LAST = "SELECT last FROM rows WHERE key = ?"
# A timestamp as record() writes it (an empty cell: never recorded when exported).
_STAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)?")
_EVENT = "SELECT status, fields, at, prev, worker FROM events WHERE seq = ?"


# Which events a timestamp cell shows, given each event's (time, status after it, fields it
# set): True for the version it shows (and older), False for a newer one, None once the
# walk is past every moment the cell can stand for without meeting the version it shows.
_Shows = Callable[[str, str, dict[str, str]], bool | None]


def shown(cell: str, row: Mapping[str, str], status_column: str) -> _Shows:
    """What a row's timestamp cell says about its events (see :func:`changed_after`), the
    file's ``row`` as the user sees it: as exported, the time of the row's last record
    (empty: never recorded); re-formatted by a spreadsheet (``30.11.2026 14:44``), one of
    the row's events in the minute or second shown, in either order of day and month.
    Several events may fall in it (a claim and its outcome): the newest whose fields, or
    else status, the file shows is the version shown; when the file shows none of them,
    all of them count as newer (the journal's values are kept, not lost)."""
    if _STAMP.fullmatch(cell):
        return lambda at, _status, _fields: at <= cell
    windows = stamp_windows(cell)
    earliest = min((start for start, _ in windows), default="")
    seen: list[str] = []  # events met in a window: their walk is conservative

    def shows(at: str, status: str, fields: dict[str, str]) -> bool | None:
        if any(start <= at < end for start, end in windows):
            seen.append(at)
            return _shows_event(row, status_column, status, fields)
        if at < earliest or not windows:
            return True if seen else None
        return False

    return shows


def _shows_event(
    row: Mapping[str, str], status_column: str, status: str, fields: dict[str, str]
) -> bool:
    """Whether the file's ``row`` shows what an event set: its fields' values (those the
    file has), or, for an event that set none, its status (an empty cell is PENDING)."""
    present = {name: value for name, value in fields.items() if name in row}
    if present:
        return all(row[name] == value for name, value in present.items())
    if status_column not in row:
        return True
    return status == (row[status_column] or PENDING)


def changed_after(conn: Connection, key: str, shown: _Shows, settings: Settings) -> set[str] | None:
    """The fields of row ``key`` that records newer than the version the file shows (see
    :func:`shown`) changed, merges aside; the status column for a change of status. None
    when no event of the row is one the file can show. Walks the row's events from the
    newest back."""
    raw = t.driver(conn)
    found = raw.execute(_LAST, (key,)).fetchone()
    seq = None if found is None else found[0]
    names: set[str] = set()
    later: tuple[str, str] | None = None  # (status, worker) of the event after this one
    while seq is not None:
        status, fields, at, prev, worker = raw.execute(_EVENT, (seq,)).fetchone()
        if later is not None and later[0] != status and later[1] != MERGE_WORKER:
            names.add(settings.status_column)
        showing = shown(at, status, json.loads(fields))
        if showing is None:
            return None
        if showing:
            return names
        if worker != MERGE_WORKER:
            names.update(json.loads(fields))
        later, seq = (status, worker), prev
    if shown("", PENDING, {}) is None:  # a re-formatted stamp, but of none of the events
        return None
    if later is not None and later[0] != PENDING and later[1] != MERGE_WORKER:
        names.add(settings.status_column)  # the first record changed PENDING
    return names
