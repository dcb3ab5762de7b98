"""``import --merge``: bring hand edits of the CSV into its journal.

New rows are added, changed input fields updated, and a terminal row is never moved back
to another status. Rows missing from the CSV stay in the journal. Afterwards the edited file
counts as seen, so the next exporting open accepts it and rewrites it from the journal.

The edit is measured against the export it was made to (the journal's ``csv_seq``), not
against the journal as it is now: a field or status that a record changed after that export
(the job kept running while someone edited, or a crash left records unexported) keeps the
journal's newer value, where the file still shows the old one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from sqlalchemy import Connection

from csvjournal import _reads
from csvjournal import _schema as t
from csvjournal._importer import check_keys
from csvjournal._open import open as open_journal
from csvjournal._settings import forget_values, write_value
from csvjournal._writer import PENDING
from csvjournal.csvio import read_csv
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


def merge_csv(
    csv_path: str | os.PathLike[str],
    *,
    journal_path: str | os.PathLike[str] | None = None,
    encoding: str | None = None,
) -> MergeReport:
    """Merge the rows of the (hand-edited) CSV into its journal, in one transaction.

    The CSV is read in the encoding the journal stored at import (the one its exports are
    written in), unless ``encoding`` names another.

    Raises:
        CsvFormatError: the CSV is not valid input (nothing is changed).
        SettingsError: there is no journal for this CSV.
        JournalIOError: the CSV could not be read (deleted, say).
    """
    path = Path(csv_path)
    report = MergeReport()
    with open_journal(path, journal_path=journal_path, export=False) as journal:
        settings = journal.settings
        # the file was written by the exporter in the stored encoding, then edited by hand:
        # reading it as UTF-8 would refuse the very file the hand-edit error says to merge
        parsed = read_csv(path, encoding=encoding or settings.dialect.encoding)
        check_keys(path, parsed, settings.key_column)
        with journal.batch():
            with journal._reading() as conn:  # inside the batch: under the write lock
                columns = _reads.column_names(conn)
                rows = [
                    dict(zip(columns, cells, strict=True))
                    for cells in _reads.all_cells(conn, columns)
                ]
                newer = _changed_since(conn, _reads.exported_seq(conn), settings.status_column)
            current = {row[settings.key_column]: row for row in rows}
            seen: set[str] = set()
            for values in parsed.rows:
                row = dict(zip(parsed.header, values, strict=True))
                key = row[settings.key_column]
                seen.add(key)
                _merge_row(journal, row, current.get(key), newer.get(key, set()), report)
            report.missing.extend(key for key in current if key not in seen)
        with journal._store.write() as conn:  # the edited file is now known, not foreign
            # the digest of the bytes parsed (a second read could see a later edit)
            write_value(conn, "csv_digest", parsed.digest)
            # ... but it shows no state of the journal: the next open rewrites it, also
            # when the merge changed nothing (rows deleted by hand come back); a running
            # exporter that the edit stopped resumes (it knows the file now)
            forget_values(conn, "csv_seq", "csv_rows", "csv_blocked")
    log.info(
        "csv_merged",
        path=str(path),
        added=len(report.added),
        updated=len(report.updated),
        terminal_kept=len(report.terminal_kept),
        missing=len(report.missing),
        newer_kept=len(report.newer_kept),
    )
    return report


def _changed_since(conn: Connection, base: int | None, status_column: str) -> dict[str, set[str]]:
    """Per key, the fields that records after event ``base`` changed (``status_column`` for
    a change of status); nothing when the export ``base`` is unknown."""
    if base is None:
        return {}
    changed: dict[str, set[str]] = {}
    for key, status, fields, before in t.driver(conn).execute(_CHANGED_SINCE, (base,)):
        names = changed.setdefault(key, set())
        names.update(json.loads(fields))
        if status != (before or PENDING):
            names.add(status_column)
    return changed


# Each later event with the status of the row's event before it (PENDING before the first).
_CHANGED_SINCE = """
SELECT e.key, e.status, e.fields, p.status FROM events AS e LEFT JOIN events AS p ON p.seq = e.prev
WHERE e.seq > ? ORDER BY e.seq
"""


def _merge_row(
    journal: Journal,
    row: dict[str, str],
    known: dict[str, str] | None,
    newer: set[str],
    report: MergeReport,
) -> None:
    settings = journal.settings
    key = row[settings.key_column]
    ours = {settings.key_column, settings.status_column, settings.timestamp_column}
    status = row.get(settings.status_column) or None
    fields = {name: value for name, value in row.items() if name not in ours}
    if known is None:
        journal.record(key, status, fields={k: v for k, v in fields.items() if v})
        report.added.append(key)
        return
    changed = {name: value for name, value in fields.items() if known.get(name, "") != value}
    stale = {name for name in changed if name in newer}
    if status != known[settings.status_column] and settings.status_column in newer:
        stale.add(settings.status_column)
        status = None  # the journal's status is newer than the file's
    if stale:
        report.newer_kept.append(key)
        changed = {name: value for name, value in changed.items() if name not in stale}
    if status == known[settings.status_column]:
        status = None
    elif status is not None and known[settings.status_column] in settings.terminal:
        report.terminal_kept.append(key)  # done stays done
        status = None
    if changed or status is not None:
        journal.record(key, status, fields=changed)
        report.updated.append(key)
