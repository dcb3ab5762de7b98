"""The ``csvjournal`` command line: the only place that configures logging and prints."""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import structlog
from rich.console import Console
from rich.table import Table

import csvjournal
from csvjournal.errors import CsvJournalError

__all__ = ["cli", "main"]

_WORKERS = 8
_ITEMS = 2000


def _configure_logging(json_logs: bool, debug: bool) -> None:
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json_logs
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if debug else logging.WARNING
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )


@click.group()
@click.version_option(csvjournal.__version__, prog_name="csvjournal")
@click.option("--log-json", is_flag=True, help="Write logs as JSON lines on stderr.")
@click.option("--debug", is_flag=True, help="Show debug logs and tracebacks.")
@click.pass_context
def cli(ctx: click.Context, log_json: bool, debug: bool) -> None:
    """Keep a batch job's CSV status sheet correct, current and crash-safe."""
    _configure_logging(log_json, debug)
    ctx.obj = {"debug": debug}


def _demo_item(journal: csvjournal.Journal, n: int) -> None:
    key = f"PO-{n:05d}"
    if n % 17 == 0:
        journal.record(key, "FAILED", ERROR_MESSAGE="supplier portal timed out")
    else:
        journal.record(key, "COMPLETED", ATTACHMENTS_FOUND=n % 4, SUPPLIER=f"Supplier {n % 7}")


@cli.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
def demo(directory: Path | None) -> None:
    """Record a small job from 8 threads into a new journal and show the result."""
    console = Console()
    folder = directory or Path(tempfile.mkdtemp(prefix="csvjournal-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder / "orders.csv"
    for leftover in [csv_path, *folder.glob("orders.csv.journal*")]:  # an earlier demo's
        leftover.unlink(missing_ok=True)
    shutil.rmtree(folder / "orders.csv.backups", ignore_errors=True)
    started = time.perf_counter()
    with csvjournal.open(csv_path, key="PO_NUMBER") as journal:
        with journal.batch():
            for n in range(_ITEMS):
                journal.record(f"PO-{n:05d}")
        with ThreadPoolExecutor(_WORKERS) as pool:
            list(pool.map(lambda n: _demo_item(journal, n), range(_ITEMS)))
        elapsed = time.perf_counter() - started
        table = Table(title="rows per status")
        table.add_column("status")
        table.add_column("rows", justify="right")
        for status, count in sorted(journal.counts().items()):
            table.add_row(status, str(count))
        console.print(table)
        console.print(
            f"{_ITEMS} durable records from {_WORKERS} threads in {elapsed:.2f} s"
            f" ({_ITEMS / elapsed:,.0f}/s, group commit)"
        )
        console.print("history of PO-00017:")
        for event in journal.history("PO-00017"):
            console.print(f"  #{event.seq} {event.key} {event.status} {dict(event.fields)}")
    # closed: the exporter has written every record to the CSV
    console.print(f"the status sheet: {csv_path}")
    console.print(f"the journal:      {csv_path}.journal")


def main() -> None:
    """Run the command line; errors print one line on stderr and exit 2."""
    debug = "--debug" in sys.argv
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except CsvJournalError as exc:
        if debug:
            raise
        click.echo(f"csvjournal: error: {exc}", err=True)
        sys.exit(2)
