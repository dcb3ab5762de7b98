"""``csvjournal status``: counts, % done, rate, ETA, the exporter and the CSV's freshness."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import click
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from csvjournal._writer import IN_PROGRESS, PENDING
from csvjournal.cli._app import (
    CliError,
    Seconds,
    cli,
    csv_argument,
    json_option,
)
from csvjournal.cli._journals import existing_journal
from csvjournal.cli._output import print_json, stdout_console
from csvjournal.progress import Progress, progress

__all__: list[str] = []


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _rate_text(rate: float | None) -> str:
    """Rows a second, or a minute under one a second (a row a minute is not "0.0 rows/s")."""
    if rate is None:
        return "no rows finished in the last minute"
    return f"{rate:,.1f} rows/s" if rate >= 1 else f"{rate * 60:,.1f} rows/min"


def render(csv: Path, snap: Progress) -> Group:
    """The human view of a :class:`Progress` snapshot."""
    table = Table(title=f"{csv}", title_justify="left")
    table.add_column("status")
    table.add_column("rows", justify="right")
    shown, rest = _most(snap.counts, {PENDING, IN_PROGRESS, *snap.terminal})
    for status, count in shown:
        mark = " (done)" if status in snap.terminal else ""
        table.add_row(status + mark, f"{count:,}")
    if rest:  # (workers that record an error text as the status: thousands of lines)
        table.add_row(
            f"... {len(rest):,} more statuses (--json lists them all)",
            f"{sum(count for _, count in rest):,}",
        )
    rate = _rate_text(snap.rate)
    freshness = "current" if snap.csv_current else f"{snap.events_behind:,} events behind"
    if snap.csv_shows_other_guard:  # an open turned the formula guard on or off
        freshness = "written with the other formula guard setting (the next export rewrites it)"
    elif snap.exported_seq is None:  # an init killed before its export, say
        freshness = "not written from the journal yet (the next exporting open does)"
    if not snap.csv_exists:
        freshness = "missing (the next exporting open writes it anew)"
    elif snap.csv_edited_by_hand:
        freshness = (
            "edited by hand, not updated until `csvjournal import --merge` brings the edits in"
        )
    elif snap.csv_age_seconds is not None and snap.exported_seq is not None:
        freshness += f", written {snap.csv_age_seconds:.1f} s ago"
    lines = [
        f"{snap.done:,} of {snap.rows:,} rows done ({snap.percent_done:.1f} %),"
        f" {snap.pending:,} pending, {snap.in_progress:,} leased to workers",
        f"rate: {rate}; ETA: {_duration(snap.eta_seconds)}",
        f"exporter: {_exporter(snap)}; CSV: {freshness}",
    ]
    return Group(table, Text("\n".join(lines)))


_MOST_STATUSES = 25  # lines of the table


def _most(
    counts: dict[str, int], always: set[str]
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """The statuses the table shows (all, or those ``always`` shown and the commonest
    others, in their order) and the rest."""
    items = list(counts.items())
    if len(items) <= _MOST_STATUSES:
        return items, []
    by_count = sorted(
        range(len(items)), key=lambda index: (items[index][0] not in always, -items[index][1])
    )
    kept = set(by_count[: _MOST_STATUSES - 1])
    return (
        [item for index, item in enumerate(items) if index in kept],
        [item for index, item in enumerate(items) if index not in kept],
    )


def _exporter(snap: Progress) -> str:
    if not snap.exporter_alive:
        return "none running"
    if snap.exporter_stopped:
        return f"stopped, process {snap.exporter_pid} (`kill -CONT {snap.exporter_pid}` resumes it)"
    return "alive" if snap.exporter_pid is None else f"alive, process {snap.exporter_pid}"


@cli.command()
@csv_argument
@json_option
@click.option(
    "--watch",
    is_flag=True,
    help="Refresh in place until every row is done, in a terminal status (Ctrl-C stops).",
)
@click.option(
    "--interval",
    type=Seconds(min=0.1, max=3600),
    default=1.0,
    show_default=True,
    help="Seconds between refreshes with --watch.",
)
def status(csv: Path, as_json: bool, watch: bool, interval: float) -> None:
    """Show how far the job is: rows per status, % done, rate, ETA, exporter, CSV freshness."""
    if watch and as_json:  # one document is what --json promises a script
        raise CliError("--watch and --json do not go together: --json prints one document")
    source = click.get_current_context().get_parameter_source("interval")
    if not watch and source is not click.core.ParameterSource.DEFAULT:
        raise CliError("--interval sets the refresh of --watch: give --watch too")
    if watch:
        # Open only for each look: a watch left running would keep a restore out (it needs
        # the journal closed everywhere), and for an operator who may not write the
        # journal, SQLite's -wal/-shm files made for the view are the operator's while it
        # is open: the job's user could not write the journal meanwhile.
        _watch(csv, lambda: _look(csv), interval)
        return
    snap = _look(csv)
    if as_json:
        print_json({"csv": str(csv), **snap.to_dict()})
    else:
        stdout_console().print(render(csv, snap))


def _look(csv: Path) -> Progress:
    with existing_journal(csv, reading=True) as journal:
        return progress(journal)


def _watch(csv: Path, take: Callable[[], Progress], interval: float) -> None:
    """Show a snapshot every ``interval`` seconds until every row is done; Ctrl-C ends it
    as it ends any command ("interrupted", exit 130)."""
    console = stdout_console()
    snap = take()
    if not console.is_terminal:  # a file or a pipe: one snapshot a refresh, as it comes
        while True:
            console.print(render(csv, snap))
            sys.stdout.flush()
            if snap.done >= snap.rows:
                return
            time.sleep(interval)
            snap = take()
    with Live(render(csv, snap), console=console, auto_refresh=False) as live:
        while snap.done < snap.rows:
            time.sleep(interval)
            snap = take()
            live.update(render(csv, snap), refresh=True)
