"""The formula guard: how a sheet shows a text that a spreadsheet would run as a formula.

OWASP's "CSV injection": a cell starting with ``= + - @``, tab or CR runs in Excel. With the
guard on, the exporter prefixes such a text with ``'``, which Excel hides; a merge reads the
prefix back off. The rules changed once (numbers with a decimal comma are left alone since
rules 2), so each export notes the rules it followed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial

__all__ = [
    "GUARD_RULES",
    "GUARD_RULES_KNOWN",
    "TWIN_START",
    "guard_formula",
    "guard_twin",
    "sheet_guard",
    "unguard_formula",
]

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# What a text starts with when guard_formula shows it as it shows another (see guard_twin).
TWIN_START = ("'", *_FORMULA_START)
# Which rules guard_formula follows (each export notes them, for a merge of its sheet; the
# records an exporter stored under others are rendered anew). 2: a number with a decimal
# comma or group separators is left alone too (rules 2 guard a part of what 1 did: no two
# texts they show alike were shown apart before).
GUARD_RULES = 2
GUARD_RULES_KNOWN = (1, 2)
# A number as a sheet may hold it, by the rules: a decimal point or comma, group separators
# (-1,234.50; -1.234,50): digits and separators alone run nothing, whatever the locale.
_PLAIN_NUMBER = {
    1: re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?"),
    2: re.compile(r"[+-]?[.,]?\d[\d.,]*([eE][+-]?\d+)?"),
}


def guard_formula(value: str, rules: int = GUARD_RULES) -> str:
    """``value`` as a spreadsheet will not run it (OWASP "CSV injection"): text starting
    with ``= + - @``, tab or CR gets a leading ``'``; plain numbers such as ``-12.5`` or
    ``-12,5`` stay (``rules`` 1, an older csvjournal's: only the first)."""
    if value.startswith(_FORMULA_START) and not _PLAIN_NUMBER[rules].fullmatch(value):
        return "'" + value
    return value


def unguard_formula(value: str, rules: int = GUARD_RULES) -> str:
    """The value that :func:`guard_formula` showed as ``value`` (itself if not guarded)."""
    if value.startswith("'") and guard_formula(value[1:], rules) == value:
        return value[1:]
    return value


def sheet_guard(
    formula_guard: bool, rules: int = GUARD_RULES
) -> tuple[Callable[[str], str], Callable[[str], str]]:
    """How a sheet written with (or without) the guard, under ``rules``, shows a text, and
    what it means by a text it shows."""
    if not formula_guard:
        return str, str
    return partial(guard_formula, rules=rules), partial(unguard_formula, rules=rules)


def guard_twin(value: str, rules: int = GUARD_RULES) -> str | None:
    """The other text that :func:`guard_formula` shows as it shows ``value`` (``=A`` and
    ``'=A`` both show as ``'=A``), or ``None`` when no other text does."""
    if value.startswith("'"):
        return value[1:] if guard_formula(value[1:], rules) == value else None
    return "'" + value if guard_formula(value, rules) != value else None
