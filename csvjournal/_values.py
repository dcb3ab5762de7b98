"""How Python values become CSV cell text, and how timestamps are written."""

from __future__ import annotations

import datetime as dt
import numbers
import time
from decimal import Decimal

from csvjournal.errors import RecordError

__all__ = [
    "format_timestamp",
    "parse_timestamp",
    "render_value",
    "seconds_arg",
    "storable",
    "timestamp_now",
]


def render_value(name: str, value: object) -> str:
    """Return the cell text for ``value`` of the field ``name``.

    ``str`` stays as is, ``None`` is empty, ``int``/``float``/``bool``/``Decimal`` go through
    ``str()``, ``date``/``datetime`` through ``isoformat()``. A subclass renders as
    its base type's value: an enum mixed with ``str`` or ``int`` (``class Status(str,
    Enum)``) writes its value, not ``Status.DONE`` as its own ``str()`` would.

    Raises:
        TypeError: for any other type, naming the field (and the type's module: a
            ``numpy.bool`` is no ``bool``). A ``time`` of day is one: without its date it
            is not a moment, and the spec lists only dates and datetimes.
        RecordError: an int too long for Python to write as text.
    """
    if isinstance(value, str):
        return str.__str__(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        try:
            return int.__repr__(value)
        except ValueError:  # past Python's int-to-text limit (sys.get_int_max_str_digits)
            raise RecordError(
                f"field {name!r}: an int too long to write as text (pass it as a str)"
            ) from None
    if isinstance(value, float):
        return float.__repr__(value)
    if isinstance(value, Decimal):
        return Decimal.__str__(value)
    if isinstance(value, dt.date):  # datetime is a date subclass
        return value.isoformat()
    kind = type(value)
    named = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    raise TypeError(
        f"field {name!r}: unsupported value of type {named}"
        " (use str, int, float, bool, Decimal, date, datetime or None)"
    )


def storable(text: object) -> bool:
    """Whether SQLite can hold ``text`` (a lone surrogate, e.g. from an undecodable command
    line argument, cannot be UTF-8): no row can have a key that is not."""
    if not isinstance(text, str) or text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def format_timestamp(moment: dt.datetime) -> str:
    """Format an aware datetime as ISO 8601 UTC with milliseconds and a ``Z``."""
    text = moment.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="milliseconds")
    return f"{text}Z"


# (second, "YYYY-MM-DDTHH:MM:SS") of the last call: strftime costs more than a record.
_second_cache: tuple[int, str] = (-1, "")
# ".000Z" to ".999Z": formatting the milliseconds took half of the call's 0.55 µs.
_MILLISECONDS = tuple(f".{ms:03d}Z" for ms in range(1000))


def timestamp_now() -> str:
    """The current UTC time as :func:`format_timestamp` writes it, cheaply."""
    global _second_cache  # noqa: PLW0603 - a one-entry cache, swapped atomically
    now = time.time()
    second = int(now)
    cached = _second_cache
    if cached[0] != second:
        cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        _second_cache = cached
    return cached[1] + _MILLISECONDS[int((now - second) * 1000)]


def parse_timestamp(text: str) -> dt.datetime:
    """Parse a timestamp written by :func:`format_timestamp` into an aware UTC datetime."""
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC)


def seconds_arg(name: str, value: object) -> float:
    """``value``, an argument that is a number of seconds, as a float.

    Raises:
        TypeError: not a real number (text, a bool); numpy's and ``Fraction`` are.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__} {value!r}")
    return float(value)
