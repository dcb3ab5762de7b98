"""How Python values become CSV cell text, and how timestamps are written."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

__all__ = ["format_timestamp", "parse_timestamp", "render_value", "utc_now"]

_SCALARS = (int, float, Decimal)


def render_value(name: str, value: object) -> str:
    """Return the cell text for ``value`` of the field ``name``.

    ``str`` stays as is, ``None`` is empty, ``int``/``float``/``bool``/``Decimal`` go through
    ``str()``, ``date``/``datetime``/``time`` through ``isoformat()``.

    Raises:
        TypeError: for any other type, naming the field.
    """
    if isinstance(value, str):
        return str(value)  # str() turns str subclasses (StrEnum) into their plain value
    if value is None:
        return ""
    if isinstance(value, _SCALARS):  # bool is an int subclass: str(True) == "True"
        return str(value)
    if isinstance(value, (dt.date, dt.time)):  # datetime is a date subclass
        return value.isoformat()
    raise TypeError(
        f"field {name!r}: unsupported value of type {type(value).__name__}"
        " (use str, int, float, bool, Decimal, date, datetime or None)"
    )


def utc_now() -> dt.datetime:
    """Return the current time as an aware UTC datetime."""
    return dt.datetime.now(dt.UTC)


def format_timestamp(moment: dt.datetime) -> str:
    """Format an aware datetime as ISO 8601 UTC with milliseconds and a ``Z``."""
    utc = moment.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_timestamp(text: str) -> dt.datetime:
    """Parse a timestamp written by :func:`format_timestamp` into an aware UTC datetime."""
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC)
