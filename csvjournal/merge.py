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

The rows are compared without the journal's write lock, and only the changes written in
one transaction (see :mod:`csvjournal._mergeplan`): workers go on while a big sheet is
compared.

With the formula guard on, the file shows guarded values (``'=SUM(A1)``): they are compared
as shown, and a guarded value the edit brings in is recorded without its ``'``.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import structlog

from csvjournal import _reads
from csvjournal._importer import check_keys
from csvjournal._mergeplan import MergeReport, apply_plan, plan_rows
from csvjournal._mergeread import read_sheet
from csvjournal._newer import MERGE_WORKER
from csvjournal._open import open as open_journal
from csvjournal._settings import forget_values, read_value, write_value
from csvjournal.csvio import GUARD_RULES_KNOWN, ParsedCsv, guard_formula, unguard_formula
from csvjournal.errors import CsvFormatError

__all__ = ["MergeReport", "merge_csv"]

log = structlog.get_logger(__name__)


def merge_csv(
    csv_path: str | os.PathLike[str],
    *,
    journal_path: str | os.PathLike[str] | None = None,
    encoding: str | None = None,
) -> MergeReport:
    """Merge the rows of the (hand-edited) CSV into its journal, its changes in one
    transaction.

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
            rules = read_value(conn, "csv_guard_rules")
        if isinstance(written_with, bool):  # (an open may have turned it on or off since)
            # under its rules: an older csvjournal noted none, and followed rules 1
            rules = rules if rules in GUARD_RULES_KNOWN else 1
            settings = replace(settings, formula_guard=written_with, guard_rules=rules)
        with journal._reading() as conn:
            parsed = read_sheet(conn, path, settings, encoding)
            known = {read_value(conn, "csv_digest"), read_value(conn, "csv_pending")}
        if parsed.digest in known:  # an export, behind the journal: no edit to merge
            log.info("csv_merge_unedited", path=str(path))
            return replace(report, unedited=True)
        if settings.formula_guard:
            with journal._reading() as conn:
                columns = _reads.column_names(conn)
                parsed = _unguarded_header(path, parsed, columns, settings.guard_rules)
        check_keys(path, parsed, settings.key_column)
        _refuse_unwritable_names(path, parsed, settings.dialect.encoding)
        journal._local.worker = MERGE_WORKER  # this handle is the merge's own
        with journal._reading() as conn:
            since = _reads.last_seq(conn)
        planned = plan_rows(journal, settings, path, parsed, report)  # without the lock
        with journal.batch():
            apply_plan(journal, settings, parsed, report, planned=planned, since=since)
        with journal._errors(), journal._store.write() as conn:  # the edited file is known now
            # the digest of the bytes parsed (a second read could see a later edit)
            write_value(conn, "csv_digest", parsed.digest)
            # ... but it shows no state of the journal: the next open rewrites it, also
            # when the merge changed nothing (rows deleted by hand come back); a running
            # exporter that the edit stopped resumes (it knows the file now)
            forget_values(
                conn, "csv_seq", "csv_rows", "csv_blocked", "csv_guard", "csv_guard_rules"
            )
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


def _unguarded_header(path: Path, parsed: ParsedCsv, columns: list[str], rules: int) -> ParsedCsv:
    """``parsed`` with the column names its header shows as the formula guard shows them
    (``'=X``) taken as the journal's columns: ``=X``, or ``'=X`` if that is the one there
    is; a new name without the guard's ``'``.

    Raises:
        CsvFormatError: two names of the header are one column once the ``'`` is off.
    """
    known = set(columns)
    header: list[str] = []
    for index, name in enumerate(parsed.header):
        typed = unguard_formula(name, rules)
        shown = guard_formula(typed, rules)
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
