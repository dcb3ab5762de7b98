"""The arguments of claims and the work loop, checked: counts, leases, workers, keys."""

from __future__ import annotations

import numbers
from collections.abc import Iterable

from csvjournal._values import seconds_arg
from csvjournal.errors import SettingsError

__all__ = [
    "MAX_LEASE_SECONDS",
    "as_count",
    "attempts_limit",
    "claim_args",
    "key_list",
    "valid_lease",
]

# A lease is how long a dead worker's row stays taken: past a month, a typo (and infinity
# overflows the clock).
MAX_LEASE_SECONDS = 30 * 86_400


def valid_lease(lease: object) -> bool:
    """Whether ``lease`` is a lease's length (for what it raises, see
    :func:`~csvjournal._values.seconds_arg`)."""
    return 0 < seconds_arg("lease", lease) <= MAX_LEASE_SECONDS  # NaN is neither


def key_list(keys: Iterable[str]) -> list[str]:
    """``keys`` as a list; a lone key given for a list of them is refused, not taken for
    its characters.

    Raises:
        TypeError: ``keys`` is a string (or bytes), or not iterable.
    """
    if isinstance(keys, str | bytes):
        raise TypeError(f"keys must be a list of keys, not the one key {keys!r}: use [{keys!r}]")
    return list(keys)


def as_count(name: str, value: object) -> int | None:
    """``value`` as a count (an int, None kept): SQLite's limits are 64 bits, so a huge one
    is as good as all.

    Raises:
        TypeError: not an integer (a float, a bool, text); numpy's are.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):  # numpy's are
        raise TypeError(f"{name} must be an int, not {type(value).__name__} {value!r}")
    return min(int(value), 2**62)


def attempts_limit(caller: str, value: object) -> int | None:
    """``max_attempts`` of ``caller`` as a count, or None.

    Raises:
        TypeError: not an integer.
        SettingsError: below 1.
    """
    limit = as_count("max_attempts", value)
    if limit is not None and limit < 1:
        raise SettingsError(f"{caller} needs max_attempts >= 1 or None, not {limit}")
    return limit


def claim_args(
    n: object, lease: float, worker: object, max_attempts: object
) -> tuple[int, int | None]:
    """``n`` and ``max_attempts`` as counts, once every argument of a claim is checked.

    Raises:
        SettingsError: ``n`` or ``max_attempts`` below 1, or ``lease`` not a number of
            seconds above 0 and at most :data:`MAX_LEASE_SECONDS` (30 days).
        TypeError: ``n`` or ``max_attempts`` not an int, ``worker`` not text, ``lease``
            not a number.
    """
    count, limit = as_count("n", n) or 0, as_count("max_attempts", max_attempts)
    if worker is not None and (type(worker) is not str or not worker):
        raise TypeError(f"worker must be a name (non-empty text), not {worker!r}")
    if count < 1 or not valid_lease(lease) or (limit is not None and limit < 1):
        raise SettingsError(
            f"claim needs n >= 1, 0 < lease <= {MAX_LEASE_SECONDS:,} (30 days) and"
            f" max_attempts >= 1 or None, not n={count}, lease={lease}, max_attempts={limit}"
        )
    return count, limit
