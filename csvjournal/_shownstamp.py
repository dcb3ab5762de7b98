"""Timestamp cells a spreadsheet re-formatted: which moments they can stand for.

``record()`` stamps rows as ``2026-11-30T14:44:12.345Z``. Opened in a spreadsheet and saved
again, the cell comes back as that program shows dates: ``30.11.2026 14:44``,
``11/30/2026 2:44 PM``, ``2026-11-30 14:44:12``. A merge needs the version of the row the
sheet shows, so it reads such a cell back as a *window*: the minute (or second) shown. The
day and month of ``1/2/2026`` may be either way round: both windows are candidates, and the
row's own events tell which one is right (see :mod:`csvjournal.merge`). Times are taken as
written: a spreadsheet shows the text's time, it does not convert it to a time zone. A
time with its offset from UTC (``2026-11-30 15:44:12.345+01:00``, as pandas writes times
it was told are UTC and then converted) is taken back to UTC.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

__all__ = ["stamp_windows"]

_TIME = (
    r"[ T,]+(\d{1,2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?\s*([AaPp]\.?\s?[Mm]\.?)?"
    # a zone, as pandas and isoformat() write it (+00:00), or said (Z, UTC, GMT)
    r"\s*(?:Z|UTC|GMT|([+-])(\d{2}):?(\d{2})?)?"
)
_YEAR_FIRST = re.compile(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})" + _TIME)
_YEAR_LAST = re.compile(r"(\d{1,2})([./-])(\d{1,2})[./-](\d{4}|\d{2})" + _TIME)


def stamp_windows(text: str) -> list[tuple[str, str]]:
    """The moments a re-formatted timestamp cell can stand for, as ``[start, end)`` pairs
    of ``record()``'s own stamps (so they compare as text); none when ``text`` is no
    rendering of a date and time that this module knows."""
    text = text.strip()
    found = _YEAR_FIRST.fullmatch(text)
    if found is not None:
        year, month, day = (int(part) for part in found.group(1, 2, 3))
        orders = [(day, month)]
        clock = found.groups()[3:]
    else:
        found = _YEAR_LAST.fullmatch(text)
        if found is None:
            return []
        first, separator, second, year_text = found.group(1, 2, 3, 4)
        year = int(year_text) + (2000 if len(year_text) == 2 else 0)
        a, b = int(first), int(second)
        # 30.11.2026 is day first wherever dots are used; 11/30/2026 may be either
        orders = [(a, b)] if separator == "." else [(a, b), (b, a)]
        clock = found.groups()[4:]
    windows = []
    for day, month in dict.fromkeys(orders):
        window = _window(year, month, day, clock)
        if window is not None:
            windows.append(window)
    return windows


def _window(
    year: int, month: int, day: int, clock: tuple[str | None, ...]
) -> tuple[str, str] | None:
    hour_text, minute, second, fraction, meridiem, sign, zone_hours, zone_minutes = clock
    hour = int(hour_text or 0)
    if meridiem is not None:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if meridiem[0] in "Pp" else 0)
    try:
        start = datetime(year, month, day, hour, int(minute or 0), int(second or 0))
        if fraction is not None:
            digits = fraction[:3]
            start += timedelta(milliseconds=int(digits.ljust(3, "0")))
            width = timedelta(milliseconds=10 ** (3 - len(digits)))
        else:
            width = timedelta(minutes=1) if second is None else timedelta(seconds=1)
        if sign is not None:  # the time of that zone: UTC's is the offset less
            offset = timedelta(hours=int(zone_hours or 0), minutes=int(zone_minutes or 0))
            start -= offset if sign == "+" else -offset
        return _stamp(start), _stamp(start + width)
    except (ValueError, OverflowError):  # a 13th month (the other order), 31.12.9999 23:59
        return None


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
