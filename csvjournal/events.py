"""The :class:`Event`: one recorded change of one row, as kept in the audit trail."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Event"]


@dataclass(frozen=True, slots=True)
class Event:
    """One committed change of one row, as returned by ``Journal.history()``.

    Attributes:
        seq: the event's sequence number, increasing across the whole journal.
        key: the row's key.
        status: the row's status after this event.
        fields: the fields this event set (name to cell text), the status and
            timestamp columns excluded.
        at: when the event was recorded (aware UTC).
        worker: who recorded it (``host:pid:thread`` unless named; ``#2``... for further
            handles of the journal in one process).
        pid: the recording process's id.
        note: a remark added by csvjournal itself (e.g. an expired lease), or ``None``.
    """

    seq: int
    key: str
    status: str
    # left out of the hash (a dict has none), so that events go in sets and dict keys: an
    # event is told apart by its sequence number anyway
    fields: Mapping[str, str] = field(hash=False)
    at: dt.datetime
    worker: str
    pid: int
    note: str | None = None
