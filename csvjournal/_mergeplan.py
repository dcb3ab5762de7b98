"""The rows of a merge (see :mod:`csvjournal.merge`), in two passes: what each row of the
file changes is worked out against the journal as it is read, without its write lock
(:func:`plan_rows`: a big sheet takes tens of seconds, and the workers would wait for it,
or fail with ``JournalBusyError``); then the changes are written in one transaction
(:func:`apply_plan`), where a row that a record changed meanwhile is worked out again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import NoReturn

from csvjournal import _newer, _reads
from csvjournal._leases import Action
from csvjournal._mangledkeys import refuse_mangled_keys
from csvjournal._settings import Settings, read_value
from csvjournal._writer import PENDING
from csvjournal.csvio import ParsedCsv, sheet_guard
from csvjournal.errors import CsvFormatError, RecordError
from csvjournal.journal import Journal

__all__ = ["MergeReport", "Planned", "apply_plan", "plan_rows"]


@dataclass(frozen=True, slots=True)
class MergeReport:
    """What :func:`merge_csv` did, by key."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    terminal_kept: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    # rows where the journal's records newer than the edited file won over its old values
    newer_kept: list[str] = field(default_factory=list)
    # columns the edit added (kept even while every cell is empty)
    added_columns: list[str] = field(default_factory=list)
    # rows a worker holds (a live lease): their status in the file not taken
    leased_kept: list[str] = field(default_factory=list)
    # columns the file lacks, kept as they are (one renamed in the sheet: added anew)
    missing_columns: list[str] = field(default_factory=list)
    # the file is one csvjournal wrote (no hand edit): nothing was merged
    unedited: bool = False


@dataclass(frozen=True, slots=True)
class Planned:
    """A record a merge makes: the file's row at ``line`` sets ``key``'s ``status`` (None:
    left alone) and ``fields`` (the changed ones: the row itself is read again from the
    file for the few rows worked out again, not held for all)."""

    line: int
    key: str
    status: str | None
    fields: dict[str, str]


# record(key, status, fields): what a row's merge makes
_Record = Callable[[str, "str | None", dict[str, str]], None]


@dataclass(slots=True)
class _Journal:
    """What a pass knows of the journal: its columns, and the fields records changed since
    the last export (per key)."""

    columns: list[str]
    since_export: dict[str, set[str]]


def _known(journal: Journal, settings: Settings) -> _Journal:
    with journal._reading() as conn:
        shown = read_value(conn, "csv_seq")  # (whatever guard it was shown with)
        base = shown if isinstance(shown, int) else None
        return _Journal(
            _reads.column_names(conn),
            _newer.changed_since(conn, base, settings.status_column),
        )


def plan_rows(
    journal: Journal, settings: Settings, path: Path, parsed: ParsedCsv, report: MergeReport
) -> list[Planned]:
    """Work out what every row of ``parsed`` changes, a chunk of rows at a time (the
    journal's rows are read for each chunk's keys, not all at once); write nothing.

    Raises:
        CsvFormatError: two rows have one key once the formula guard's ``'`` is off, or
            new keys are how a spreadsheet shows keys missing from the file.
    """
    known = _known(journal, settings)
    report.added_columns.extend(name for name in parsed.header if name not in known.columns)
    header = set(parsed.header)
    report.missing_columns.extend(name for name in known.columns if name not in header)
    # The file shows a key as the guard shows it: '=A for the row =A, and for the row '=A
    # (the guard leaves it as it is); =A typed without the ' is the same row.
    show, read = sheet_guard(settings.formula_guard, settings.guard_rules)
    key_index = parsed.header.index(settings.key_column)
    seen: set[str] = set()
    planned: list[Planned] = []
    for chunk in _chunks(parsed.records(), _CHUNK_ROWS):
        typed = [read(values[key_index]) for _, values in chunk]
        other = [show(key) for key in typed]  # the row's key, if it has the ' itself
        with journal._reading() as conn:
            current = _reads.rows_by_key(conn, known.columns, list({*typed, *other}))
            leased = _reads.leased_keys(conn, list(current), time.time())
        keys = [
            key if key in current or twin not in current else twin
            for key, twin in zip(typed, other, strict=True)
        ]
        for (line, values), key in zip(chunk, keys, strict=True):
            if key in seen:
                _refuse_again(path, parsed, key, line=line, column=settings.key_column, read=read)
            seen.add(key)
            row = dict(zip(parsed.header, values, strict=True))
            _merge_one(
                journal,
                settings,
                row,
                current.get(key),
                key=key,
                leased=key in leased,
                since_export=known.since_export,
                report=report,
                record=_planner(planned, line),
            )
    with journal._reading() as conn:
        report.missing.extend(key for key in _reads.keys(conn) if key not in seen)
    if report.added and report.missing:
        refuse_mangled_keys(
            path, parsed, settings.key_column, added=report.added, missing=report.missing, read=read
        )
    return planned


def _planner(planned: list[Planned], line: int) -> _Record:
    def plan(key: str, status: str | None, fields: dict[str, str]) -> None:
        planned.append(Planned(line, key, status, fields))

    return plan


def apply_plan(
    journal: Journal,
    settings: Settings,
    parsed: ParsedCsv,
    report: MergeReport,
    *,
    planned: list[Planned],
    since: int,
) -> None:
    """Inside the merge's batch (under the write lock): add the columns and make the
    records of ``planned``; a planned row that a record after event ``since`` changed (under
    its key, or the key the formula guard shows alike) is worked out again from the journal
    as it is now.

    Raises:
        CsvFormatError: a record is refused (text the CSV's encoding cannot write, say).
    """
    path = parsed.path
    if report.added_columns:
        new = list(report.added_columns)
        journal._write(Action(lambda conn, writer: [writer.columns.cell(conn, n) for n in new]))
    with journal._reading() as conn:
        touched = _reads.keys_recorded_since(conn, since)
    again = [item for item in planned if not touched.isdisjoint(_spellings(settings, item.key))]
    lines = {item.line for item in again}
    for item in planned:
        if item.line not in lines:
            _record(journal, path, item)
    if not again:
        return
    keys = {item.key for item in again}
    for kept in (report.added, report.updated, report.terminal_kept, report.newer_kept):
        kept[:] = [key for key in kept if key not in keys]
    report.leased_kept[:] = [key for key in report.leased_kept if key not in keys]
    known = _known(journal, settings)
    rows = {line: values for line, values in parsed.records() if line in lines}
    for item in {item.line: item for item in again}.values():
        _work_out_again(
            journal, settings, parsed, item, values=rows[item.line], known=known, report=report
        )


def _spellings(settings: Settings, key: str) -> set[str]:
    """``key``, and with the formula guard on, the key it shows alike (``=A``, ``'=A``)."""
    if not settings.formula_guard:
        return {key}
    show, read = sheet_guard(True, settings.guard_rules)
    typed = read(key)
    return {key, typed, show(typed)}


def _work_out_again(
    journal: Journal,
    settings: Settings,
    parsed: ParsedCsv,
    item: Planned,
    *,
    values: list[str],
    known: _Journal,
    report: MergeReport,
) -> None:
    """Merge the file's row at ``item.line`` again, the journal as it is now (its key as
    :func:`plan_rows` picks it: the row that the file's spelling names, if there is one)."""
    show, read = sheet_guard(settings.formula_guard, settings.guard_rules)
    typed = read(item.key)
    twin = show(typed)
    with journal._reading() as conn:
        current = _reads.rows_by_key(conn, known.columns, list({typed, twin}))
        key = typed if typed in current or twin not in current else twin
        leased = _reads.leased_keys(conn, [key], time.time())
    _merge_one(
        journal,
        settings,
        dict(zip(parsed.header, values, strict=True)),
        current.get(key),
        key=key,
        leased=key in leased,
        since_export=known.since_export,
        report=report,
        record=_recorder(journal, parsed.path, item.line),
    )


def _recorder(journal: Journal, path: Path, line: int) -> _Record:
    def record(key: str, status: str | None, fields: dict[str, str]) -> None:
        _record(journal, path, Planned(line, key, status, fields))

    return record


def _record(journal: Journal, path: Path, item: Planned) -> None:
    try:
        journal.record(item.key, item.status, fields=item.fields)
    except RecordError as exc:  # text the CSV's encoding cannot write, say
        detail = str(exc).removeprefix(f"{journal.csv_path}: ")
        raise CsvFormatError(f"{path}: line {item.line}: {detail}") from None


def _merge_one(
    journal: Journal,
    settings: Settings,
    row: dict[str, str],
    known: dict[str, str] | None,
    *,
    key: str,
    leased: bool,
    since_export: dict[str, set[str]],
    report: MergeReport,
    record: _Record,
) -> None:
    """Merge the file's ``row`` into the journal's row ``known`` (None: a new row): find
    which fields records changed after the version the file shows, then
    :func:`_merge_row`."""
    read = sheet_guard(settings.formula_guard, settings.guard_rules)[1]
    shown_at = row.get(settings.timestamp_column)
    if known is None or shown_at is None:
        newer = since_export.get(key, set()) if known else set()
    elif shown_at == known[settings.timestamp_column]:
        newer = set()  # the file shows the row's newest version
    else:
        with journal._reading() as conn:
            shows = _newer.shown(
                shown_at, {n: read(v) for n, v in row.items()}, settings.status_column
            )
            found = _newer.changed_after(conn, key, shows, settings)
        # no version to go by (a stamp typed over): the last export's
        newer = found if found is not None else since_export.get(key, set())
    _merge_row(settings, row, known, newer, key=key, leased=leased, report=report, record=record)


_CHUNK_ROWS = 400  # rows merged between two reads of the journal's rows (<= 800 keys)


def _chunks(
    records: Iterator[tuple[int, list[str]]], size: int
) -> Iterator[list[tuple[int, list[str]]]]:
    while chunk := list(islice(records, size)):
        yield chunk


def _refuse_again(
    path: Path, parsed: ParsedCsv, key: str, *, line: int, column: str, read: Callable[[str], str]
) -> NoReturn:
    index = parsed.header.index(column)
    shown = read(key)  # (the row '=A and =A read alike: the guard shows them alike)
    first = next(at for at, values in parsed.records() if read(values[index]) == shown)
    raise CsvFormatError(
        f"{path}: line {line}, column {column!r}: key {key!r} again (line {first}), once the"
        " formula guard's ' is taken off"
    )


def _merge_row(
    settings: Settings,  # read once a merge: the property asks the journal each time
    row: dict[str, str],
    known: dict[str, str] | None,
    newer: set[str],
    *,
    key: str,
    leased: bool,
    report: MergeReport,
    record: _Record,
) -> None:
    """Merge one ``row`` of the file into the journal's row ``known`` (None: a new row),
    keeping the fields ``newer`` that records changed after the version the file shows;
    the status of a row ``leased`` to a worker, which records it, stays."""
    shown, read = sheet_guard(settings.formula_guard, settings.guard_rules)
    ours = {settings.key_column, settings.status_column, settings.timestamp_column}
    status = read(row.get(settings.status_column) or "") or None
    fields = {name: value for name, value in row.items() if name not in ours}
    if known is None:
        record(key, status, {k: read(v) for k, v in fields.items() if v})
        report.added.append(key)
        return
    changed = {  # a value typed with the guard's ' or without it is the same value
        n: read(v)
        for n, v in fields.items()
        if v != shown(known.get(n, "")) and read(v) != known.get(n, "")
    }
    stale = {name for name in changed if name in newer}
    known_status = known[settings.status_column]
    blanked = status is None and settings.status_column in row  # not a deleted column
    if blanked and known_status not in ("", PENDING):
        status = PENDING  # a status blanked by hand: pending, as an empty status counts
    if status is not None and status != known_status and leased:
        report.leased_kept.append(key)  # two workers would hold the row at once
        status = None
    if status is not None and status != known_status and settings.status_column in newer:
        stale.add(settings.status_column)
        status = None  # the journal's status is newer than the file's
    if stale:
        report.newer_kept.append(key)
        changed = {name: value for name, value in changed.items() if name not in stale}
    if status == known_status:
        status = None
    elif status is not None and known_status in settings.terminal:
        report.terminal_kept.append(key)  # done stays done
        status = None
    if changed or status is not None:
        record(key, status, changed)
        report.updated.append(key)
