"""The small commands: init, pending, record, history, export, import, recover, backups,
restore and upgrade."""

from __future__ import annotations

import shlex
from dataclasses import asdict
from pathlib import Path

import click

import csvjournal
from csvjournal import _migrate
from csvjournal._flush import RETRY_NOTE
from csvjournal._handedits import file_identity
from csvjournal._importer import listed, unfinished
from csvjournal._values import format_timestamp
from csvjournal.backup import backups_folder, list_backups, prune_backups
from csvjournal.cli._app import (
    FLUSH_SECONDS,
    CliError,
    cli,
    csv_argument,
    encoding_option,
    json_option,
)
from csvjournal.cli._journals import (
    existing_journal,
    journal_path_of,
    no_journal,
    refuse_hand_edits_first,
    schema_revision,
)
from csvjournal.cli._output import key_line, print_json, working_on
from csvjournal.cli._usage import PathArgument
from csvjournal.events import Event

__all__: list[str] = []


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise CliError(f"--terminal {text!r} names no status")
    return names


@cli.command()
@csv_argument
@click.option("--key", required=True, help="The column whose value identifies a row.")
@click.option("--terminal", help="Statuses that mean done, comma-separated [COMPLETED].")
@encoding_option("The CSV's encoding (e.g. latin-1, cp1252) if not UTF-8; kept for exports.")
@click.option(
    "--formula-guard",
    is_flag=True,
    help="Prefix cells a spreadsheet would run as formulas with ' (stored: every export).",
)
def init(
    csv: Path, key: str, terminal: str | None, encoding: str | None, formula_guard: bool
) -> None:
    """Create the journal of CSV (importing its rows) and add the status columns."""
    journal_path = journal_path_of(csv)
    if journal_path.exists() and not unfinished(journal_path):
        if journal_path.is_dir():
            raise CliError(f"{journal_path}: a folder, not a journal (move it away)")
        if schema_revision(journal_path) is None:
            raise CliError(
                f"{journal_path} is there, but cannot be read as a csvjournal journal (another"
                " file, or damaged: move it away, or restore a backup)"
            )
        raise CliError(f"{journal_path} already exists: the journal is there")
    if not csv.exists():
        raise CliError(f"{csv}: no such file (init imports an existing CSV)")
    names = _names(terminal)
    with working_on(csv, "importing"):
        journal = csvjournal.open(
            csv, key=key, terminal=names, encoding=encoding, formula_guard=formula_guard
        )
    with journal:
        if not journal._created:  # another init made it between the look above and the open
            raise CliError(f"{journal_path} already exists: another process made it just now")
        rows = len(journal)
        click.echo(
            f"created {journal_path_of(csv)}: {rows:,} row{'' if rows == 1 else 's'},"
            f" key column {key}"
        )
        # the exporting open wrote the CSV, or failed to (a write-protected file, say)
        _flush(journal, done=f"created {journal_path_of(csv)}")


def _flush(journal: csvjournal.Journal, done: str = "") -> None:
    """Bring the CSV up to date now, or fail saying what was ``done`` already.

    Raises:
        CliError: the CSV could not be written (no retry: the handle closes next).
    """
    try:
        journal.flush(timeout=FLUSH_SECONDS)
    except csvjournal.CsvJournalError as exc:
        why = str(exc).removesuffix(RETRY_NOTE)
        if done:
            why = f"{done}, but the CSV was not brought up to date: {why}"
        raise CliError(why) from exc


_CHUNK = 10_000  # lines a write


@cli.command()
@csv_argument
@json_option
def pending(csv: Path, as_json: bool) -> None:
    """List the keys of pending rows, in CSV order, one a line (a backslash, line break or
    other control character in a key is escaped: \\\\, \\n, \\x1b; --json gives the keys
    exactly)."""
    with existing_journal(csv, reading=True) as journal:
        keys = journal.pending()
    if as_json:
        print_json({"csv": str(csv), "count": len(keys), "pending": keys})
    else:
        # one a line (`pending x.csv | wc -l` counts rows), written in chunks: an echo a
        # line took a million keys 10 s
        for start in range(0, len(keys), _CHUNK):
            click.echo(
                "".join(f"{key_line(key)}\n" for key in keys[start : start + _CHUNK]), nl=False
            )


def _field(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise CliError(f"bad FIELD=VALUE {text!r}: expected a column name, '=' and a value")
    return name, value


@cli.command()
@csv_argument
@click.argument("key")
@click.argument("fields", nargs=-1, metavar="[FIELD=VALUE]...")
@click.option("--status", help="The row's new status.")
@click.option("--new", "allow_new", is_flag=True, help="Allow a key the journal lacks.")
def record(
    csv: Path, key: str, fields: tuple[str, ...], status: str | None, allow_new: bool
) -> None:
    """Record an update of row KEY (from a shell script), then bring the CSV up to date."""
    values: dict[str, str] = {}
    for text in fields:
        name, value = _field(text)
        if name in values:
            raise CliError(f"field {name!r} given twice ({name}={values[name]!r} and {text!r})")
        values[name] = value
    # Exporting (when no other process does, without the session's backup): a CSV edited
    # by hand is refused at open, before anything is recorded.
    with existing_journal(csv, export=True, keep_backups=0) as journal:
        if not allow_new and journal.get(key) is None:
            raise CliError(f"{csv}: no row with key {key!r} (pass --new to add one)")
        seq = journal.record(key, status, fields=values)
        click.echo(f"recorded #{seq}")  # committed: a script must not record it again
        _flush(journal, done=f"recorded #{seq}")


def _event_data(event: Event) -> dict[str, object]:
    return {
        "seq": event.seq,
        "key": event.key,
        "status": event.status,
        "fields": dict(event.fields),
        "at": format_timestamp(event.at),
        "worker": event.worker,
        "pid": event.pid,
        "note": event.note,
    }


@cli.command()
@csv_argument
@click.argument("key")
@json_option
def history(csv: Path, key: str, as_json: bool) -> None:
    """Show the audit trail of row KEY, oldest first."""
    with existing_journal(csv, reading=True) as journal:
        if journal.get(key) is None:
            raise CliError(f"{csv}: no row with key {key!r}")
        events = journal.history(key)
    if as_json:
        print_json({"key": key, "events": [_event_data(event) for event in events]})
        return
    if not events:  # a row imported with the CSV: said, as an empty answer looks like a fault
        click.echo(f"no events for {key!r} yet: imported with the CSV, never recorded", err=True)
    for event in events:
        data = _event_data(event)
        fields = ", ".join(f"{name}={value!r}" for name, value in event.fields.items())
        parts = [f"#{event.seq}", str(data["at"]), event.status]
        parts += [f"({event.note})"] if event.note else []
        parts += [fields] if fields else []
        click.echo(" ".join([*parts, "by", event.worker]))


@cli.command()
@csv_argument
@click.option("--to", "target", type=PathArgument(dir_okay=False), help="Write here instead.")
def export(csv: Path, target: Path | None) -> None:
    """Regenerate the CSV from the journal now (or write it to --to)."""
    # Exporting (without the session's backup): the CSV is written even when the journal
    # thinks it current (deleted meanwhile), and hand edits are refused, not overwritten.
    before = file_identity(csv)
    with (
        working_on(csv, "exporting"),
        existing_journal(
            csv, export=target is None, keep_backups=0, reading=target is not None
        ) as journal,
    ):
        if target is None:  # bounded: another process's exporter may be stopped, say
            _flush(journal)
        else:
            journal.export(target)
    if target is None and before is not None and file_identity(csv) == before:
        click.echo(f"{csv} is current: it already shows every record")
        return
    click.echo(f"wrote {target or csv}")


@cli.command(name="import")
@csv_argument
@click.option("--merge", is_flag=True, required=True, help="Merge the CSV's rows into the journal.")
@encoding_option("Read the CSV in this encoding [the journal's, from init].")
@json_option
def import_(csv: Path, merge: bool, encoding: str | None, as_json: bool) -> None:
    """Bring hand edits of the CSV into the journal (new rows added, changed fields updated;
    a terminal row never moves back), then rewrite the CSV."""
    if not journal_path_of(csv).exists():
        raise no_journal(csv)
    with working_on(csv, "merging"):
        report = csvjournal.merge_csv(csv, encoding=encoding)
    behind = None  # the merge committed: its report is shown whatever the export does
    with existing_journal(csv) as journal:
        try:
            _flush(journal, done="the merge is in the journal")
        except CliError as exc:
            behind = exc
    _merge_report(csv, report, as_json)
    if behind is not None:
        raise behind


def _merge_report(csv: Path, report: csvjournal.MergeReport, as_json: bool) -> None:
    if as_json:
        print_json({"csv": str(csv), **asdict(report)})
        return
    if report.unedited:
        click.echo(f"nothing to merge: {csv} is as csvjournal wrote it (no hand edits)")
        return
    click.echo(
        f"merged {csv}: {len(report.added)} added, {len(report.updated)} updated,"
        f" {len(report.terminal_kept)} terminal rows kept,"
        f" {len(report.missing)} missing from the CSV,"
        f" {len(report.newer_kept)} kept newer records over the file's"
    )
    details = [
        ("columns added", report.added_columns),
        (
            "columns the CSV lacks (kept as they are: one renamed is added anew)",
            report.missing_columns,
        ),
        ("terminal rows kept (their status in the file not taken)", report.terminal_kept),
        ("rows whose newer records were kept over the file's", report.newer_kept),
        ("rows a worker holds (their status in the file not taken)", report.leased_kept),
    ]
    for what, names in details:
        if names:
            click.echo(f"  {what}: {listed(names)}")


@cli.command()
@csv_argument
@json_option
def recover(csv: Path, as_json: bool) -> None:
    """After a crash: check the journal, return expired leases, clean up, re-export (the
    open upgrades an older schema first, after a backup: said too)."""
    before = _revision_before_open(csv)
    refuse_hand_edits_first(csv)  # (its open would upgrade an older schema, then refuse)
    with working_on(csv, "recovering"), existing_journal(csv) as journal:
        report = journal.recover()
    head = _migrate.head_revision()
    upgraded = before is not None and before != head
    if as_json:
        print_json(
            {
                "schema_upgraded": {"from": before, "to": head} if upgraded else None,
                "integrity": report.integrity,
                "expired": [{"key": k, "worker": w} for k, w in report.expired],
                "temp_files_removed": [str(p) for p in report.temp_files_removed],
                "csv_was_stale": report.csv_was_stale,
                "pending": report.pending,
            }
        )
    else:
        if upgraded:
            click.echo(_upgraded_line(csv, before))
        for line in report.lines():
            click.echo(line)


def _revision_before_open(csv: Path) -> str | None:
    """The journal's schema revision before a command's open may upgrade it (None: no
    journal, or none readable: the open says why)."""
    journal = journal_path_of(csv)
    return schema_revision(journal) if journal.exists() else None


def _upgraded_line(csv: Path, before: str | None) -> str:
    head = _migrate.head_revision()
    return f"{journal_path_of(csv)}: upgraded schema {before} -> {head} (backup in {csv}.backups)"


@cli.command()
@csv_argument
@click.option(
    "--keep",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help=(
        "Backups to keep now, the new one among them (0: delete none now; each exporting"
        " open prunes to its own number, 5 by default)."
    ),
)
def backup(csv: Path, keep: int) -> None:
    """Back up the journal and the CSV (consistent even while workers record)."""
    with working_on(csv, "backing up"):
        # (as a read: a copy taken before trying a new csvjournal must not upgrade the job)
        with existing_journal(csv, reading=True) as journal:
            folder = journal.backup()
        prune_backups(csv, keep)
    click.echo(str(backups_folder(csv) / folder.name))  # as `backups` lists it


@cli.command()
@csv_argument
@json_option
def backups(csv: Path, as_json: bool) -> None:
    """List the backups of CSV's journal, oldest first."""
    if not journal_path_of(csv).exists():
        raise no_journal(csv)
    found = list_backups(csv)
    if as_json:
        print_json({"csv": str(csv), "backups": [str(path) for path in found]})
    elif not found:  # on stderr: a script reading the list on stdout sees an empty one
        command = shlex.join(["csvjournal", "backup", str(csv)])
        click.echo(f"no backups of {csv} yet ({command} makes one)", err=True)
    else:
        for path in found:
            click.echo(str(path))


@cli.command()
@csv_argument
@click.argument("backup_dir", metavar="BACKUP", type=PathArgument(file_okay=False))
def restore(csv: Path, backup_dir: Path) -> None:
    """Restore the journal from BACKUP (a folder `backups` lists) and rewrite the CSV.
    The current state is backed up first. Stop every worker before."""
    with working_on(csv, "restoring"):
        safety = csvjournal.restore(csv, backup_dir)
    click.echo(f"restored {csv} from {backup_dir}")
    if safety is not None:
        click.echo(f"the state before is in {safety}")


@cli.command()
@csv_argument
def upgrade(csv: Path) -> None:
    """Migrate the journal's schema to this csvjournal's (after a backup)."""
    if not journal_path_of(csv).exists():
        raise no_journal(csv)
    before = schema_revision(journal_path_of(csv))
    with existing_journal(csv):
        pass
    head = _migrate.head_revision()
    if before == head:
        click.echo(f"{journal_path_of(csv)}: already at schema {head}")
    else:
        click.echo(_upgraded_line(csv, before))
