"""``import --merge``: bring hand edits of the CSV into its journal.

New rows are added, changed input fields updated, and a terminal row is never moved back
to another status. Rows missing from the CSV stay in the journal. Afterwards the edited file
counts as seen, so the next exporting open accepts it and rewrites it from the journal.

The edit is measured against the version of each row that the file shows, not against the
journal as it is now: a field or status that a record changed after it (the job kept running
while someone edited, the sheet was saved from an older export, a crash left records
unexported) keeps the journal's newer value where the file still shows the old one. A row's
version is its timestamp cell (the time of its last record when exported; re-formatted by
a spreadsheet, the row's newest record in the minute shown, see ``_shownstamp``); without
that column, or a cell that shows none of the row's records, the last export
(``csv_seq``). A merge's own records carry the file's values: a later merge of the same
file does not count them as newer.

With the formula guard on, the file shows guarded values (``'=SUM(A1)``): they are compared
as shown, and a guarded value the edit brings in is recorded without its ``'``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import NoReturn

import structlog

from csvjournal import _newer, _reads
from csvjournal._importer import check_keys
from csvjournal._leases import Action
from csvjournal._mangledkeys import refuse_mangled_keys
from csvjournal._mergeread import read_sheet
from csvjournal._newer import MERGE_WORKER
from csvjournal._open import open as open_journal
from csvjournal._settings import Settings, forget_values, read_value, write_value
from csvjournal._writer import PENDING
from csvjournal.csvio import ParsedCsv, guard_formula, unguard_formula
from csvjournal.errors import CsvFormatError, RecordError
from csvjournal.journal import Journal

__all__ = ["MergeReport", "merge_csv"]

log = structlog.get_logger(__name__)


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


def merge_csv(
    csv_path: str | os.PathLike[str],
    *,
    journal_path: str | os.PathLike[str] | None = None,
    encoding: str | None = None,
) -> MergeReport:
    """Merge the rows of the (hand-edited) CSV into its journal, in one transaction.

    The CSV is read in the encoding the journal stored at import (the one its exports are
    written in), unless ``encoding`` names another, or the file shows it was re-saved in
    another: a BOM, or (stored as a single-byte encoding such as cp1252) text other than
    ASCII that is valid UTF-8.

    Raises:
        CsvFormatError: the CSV is not valid input (nothing is changed).
        SettingsError: there is no journal for this CSV.
        JournalIOError: the CSV could not be read (deleted, say).
    """
    path = Path(csv_path)
    report = MergeReport()
    with open_journal(path, journal_path=journal_path, export=False) as journal:
        settings = journal.settings
        with journal._reading() as conn:  # the sheet shows the guard it was written with
            written_with = read_value(conn, "csv_guard")
        if isinstance(written_with, bool):  # (an open may have turned it on or off since)
            settings = replace(settings, formula_guard=written_with)
        with journal._reading() as conn:
            parsed = read_sheet(conn, path, settings, encoding)
        if settings.formula_guard:
            with journal._reading() as conn:
                parsed = _unguarded_header(path, parsed, _reads.column_names(conn))
        check_keys(path, parsed, settings.key_column)
        _refuse_unwritable_names(path, parsed, settings.dialect.encoding)
        journal._local.worker = MERGE_WORKER  # this handle is the merge's own
        with journal.batch():
            _merge_rows(journal, settings, path, parsed, report)
        with journal._store.write() as conn:  # the edited file is now known, not foreign
            # the digest of the bytes parsed (a second read could see a later edit)
            write_value(conn, "csv_digest", parsed.digest)
            # ... but it shows no state of the journal: the next open rewrites it, also
            # when the merge changed nothing (rows deleted by hand come back); a running
            # exporter that the edit stopped resumes (it knows the file now)
            forget_values(conn, "csv_seq", "csv_rows", "csv_blocked", "csv_guard")
    log.info(
        "csv_merged",
        path=str(path),
        added_columns=len(report.added_columns),
        added=len(report.added),
        updated=len(report.updated),
        terminal_kept=len(report.terminal_kept),
        missing=len(report.missing),
        newer_kept=len(report.newer_kept),
    )
    return report


def _refuse_unwritable_names(path: Path, parsed: ParsedCsv, encoding: str) -> None:
    """Refuse a header name the CSV's encoding cannot write (the sheet was re-saved in
    another): merged, the column would stop every export of the CSV for good.

    Raises:
        CsvFormatError: the name, at its line and column.
    """
    for index, name in enumerate(parsed.header):
        try:
            name.encode(encoding)
        except UnicodeEncodeError as exc:
            line, column = parsed.header_place(index)
            raise CsvFormatError(
                f"{path}: line {line}, column {column}: header name {name!r} holds"
                f" {name[exc.start : exc.end]!r}, which the CSV's encoding ({encoding}) cannot"
                " write"
            ) from None


def _unguarded_header(path: Path, parsed: ParsedCsv, columns: list[str]) -> ParsedCsv:
    """``parsed`` with the column names its header shows as the formula guard shows them
    (``'=X``) taken as the journal's columns: ``=X``, or ``'=X`` if that is the one there
    is; a new name without the guard's ``'``.

    Raises:
        CsvFormatError: two names of the header are one column once the ``'`` is off.
    """
    known = set(columns)
    header: list[str] = []
    for index, name in enumerate(parsed.header):
        typed = unguard_formula(name)
        shown = guard_formula(typed)
        column = typed if typed in known or shown not in known else shown
        if column in header:
            (line, at), first = (
                parsed.header_place(index),
                parsed.header_place(header.index(column)),
            )
            raise CsvFormatError(
                f"{path}: line {line}, column {at}: header name {column!r} again (line"
                f" {first[0]}, column {first[1]}), once the formula guard's ' is taken off"
            )
        header.append(column)
    return replace(parsed, header=header)


def _merge_rows(
    journal: Journal, settings: Settings, path: Path, parsed: ParsedCsv, report: MergeReport
) -> None:
    """Merge every row of ``parsed`` (inside the merge's batch), a chunk of rows at a time:
    the journal's rows are read for each chunk's keys, not all at once.

    Raises:
        CsvFormatError: two rows have one key once the formula guard's ``'`` is off.
    """
    with journal._reading() as conn:  # inside the batch: under the write lock
        columns = _reads.column_names(conn)
        shown = read_value(conn, "csv_seq")  # (whatever guard it was shown with)
        base = shown if isinstance(shown, int) else None
        since_export = _newer.changed_since(conn, base, settings.status_column)
    report.added_columns.extend(name for name in parsed.header if name not in columns)
    if report.added_columns:
        new = list(report.added_columns)
        journal._write(Action(lambda conn, writer: [writer.columns.cell(conn, n) for n in new]))
    # The file shows a key as the guard shows it: '=A for the row =A, and for the row '=A
    # (the guard leaves it as it is); =A typed without the ' is the same row.
    show = guard_formula if settings.formula_guard else str
    read = unguard_formula if settings.formula_guard else str
    key_index = parsed.header.index(settings.key_column)
    stamp = settings.timestamp_column
    seen: set[str] = set()
    for chunk in _chunks(parsed.records(), _CHUNK_ROWS):
        typed = [read(values[key_index]) for _, values in chunk]
        other = [show(key) for key in typed]  # the row's key, if it has the ' itself
        with journal._reading() as conn:
            current = _reads.rows_by_key(conn, columns, list({*typed, *other}))
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
            known = current.get(key)
            shown_at = row.get(stamp)
            if known is None or shown_at is None:
                newer = since_export.get(key, set()) if known else set()
            elif shown_at == known[stamp]:
                newer = set()  # the file shows the row's newest version
            else:
                with journal._reading() as conn:
                    shows = _newer.shown(
                        shown_at, {n: read(v) for n, v in row.items()}, settings.status_column
                    )
                    found = _newer.changed_after(conn, key, shows, settings)
                # no version to go by (a stamp typed over): the last export's
                newer = found if found is not None else since_export.get(key, set())
            try:
                _merge_row(
                    journal,
                    settings,
                    row,
                    known,
                    newer,
                    key=key,
                    leased=key in leased,
                    report=report,
                )
            except RecordError as exc:  # text the CSV's encoding cannot write, say
                detail = str(exc).removeprefix(f"{journal.csv_path}: ")
                raise CsvFormatError(f"{path}: line {line}: {detail}") from None
    with journal._reading() as conn:
        report.missing.extend(key for key in _reads.keys(conn) if key not in seen)
    if report.added and report.missing:
        refuse_mangled_keys(
            path, parsed, settings.key_column, added=report.added, missing=report.missing, read=read
        )


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
    journal: Journal,
    settings: Settings,  # read once a merge: the property asks the journal each time
    row: dict[str, str],
    known: dict[str, str] | None,
    newer: set[str],
    *,
    key: str,
    leased: bool,
    report: MergeReport,
) -> None:
    """Merge one ``row`` of the file into the journal's row ``known`` (None: a new row),
    keeping the fields ``newer`` that records changed after the version the file shows;
    the status of a row ``leased`` to a worker, which records it, stays."""
    shown = guard_formula if settings.formula_guard else str
    read = unguard_formula if settings.formula_guard else str
    ours = {settings.key_column, settings.status_column, settings.timestamp_column}
    status = read(row.get(settings.status_column) or "") or None
    fields = {name: value for name, value in row.items() if name not in ours}
    if known is None:
        journal.record(key, status, fields={k: read(v) for k, v in fields.items() if v})
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
        journal.record(key, status, fields=changed)
        report.updated.append(key)
