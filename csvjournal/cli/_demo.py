"""``csvjournal demo``: a whole job on built-in data — workers, a crash, recovery, the CSV."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import random
import secrets
import shlex
import shutil
import signal
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

import csvjournal
from csvjournal._oslock import exporter_alive
from csvjournal._readonly import in_use
from csvjournal._schema import peek
from csvjournal._settings import write_value
from csvjournal.cli._app import FLUSH_SECONDS, CliError, cli
from csvjournal.cli._output import configure_logging, log_json_wanted, stdout_console
from csvjournal.cli._usage import PathArgument

__all__: list[str] = []

ROWS = 2500
WORKERS = 4
LEASE = 2.0
MAX_ATTEMPTS = 3  # a worker's tries of a row
_LOOK_SECONDS = 5.0  # for a moment to kill a worker at (see _stop_holding)
COLUMNS = [
    "PO_NUMBER",
    "STATUS",
    "SUPPLIER",
    "ORDER_DATE",
    "AMOUNT",
    "ATTACHMENTS_FOUND",
    "L1 UU Supplier Name",
    "LAST_PROCESSED",
    "ERROR_MESSAGE",
]
_SUPPLIERS = [
    'Müller; "Feinmechanik" GmbH',
    "ACME Corp.",
    "Société Générale d'Équipement",
    "Åkerlund & Rausing AB",
    "Tanaka 田中 Trading",
    "Línea\nDos S.L.",
]


# How the demo's sheet starts, as written and as exported (a journal keeps the BOM and order)
_HEADER = b"\xef\xbb\xbf" + ";".join(COLUMNS[:3]).encode() + b";"


def write_sheet(path: Path, rows: int = ROWS, seed: int = 7) -> None:
    """Write the built-in purchase-order sheet: ``;``-delimited, UTF-8 with a BOM."""
    rng = random.Random(seed)

    def quote(text: str) -> str:
        if any(c in text for c in ';"\n\r'):
            return '"' + text.replace('"', '""') + '"'
        return text

    lines = [";".join(quote(c) for c in COLUMNS)]
    for n in range(1, rows + 1):
        cells = [
            f"PO-2026-{n:05d}",
            "",
            rng.choice(_SUPPLIERS),
            f"2026-{rng.randint(1, 11):02d}-{rng.randint(1, 28):02d}",
            f"{rng.randint(100, 250_000) / 100:.2f}",
            "",
            "",
            "",
            "",
        ]
        lines.append(";".join(quote(c) for c in cells))
    path.write_bytes(b"\xef\xbb\xbf" + ("\r\n".join(lines) + "\r\n").encode())


def demo_worker(journal: csvjournal.Journal, name: str, seed: int, json_logs: bool = False) -> None:
    """One worker process: claim purchase orders and 'download their attachments'."""
    # A spawned process starts unconfigured; the failures are the demo's point, and show
    # in the journal: no warning line per failed attempt.
    configure_logging(json_logs=json_logs, debug=False, quiet=not json_logs)
    rng = random.Random(seed)
    for task in journal.work(lease=LEASE, worker=name, max_attempts=MAX_ATTEMPTS):
        with task:
            time.sleep(rng.uniform(0.001, 0.006))  # the download
            number = int(task.key.rsplit("-", 1)[1])
            if number % 97 == 0:
                raise LookupError(f"{task.key} not found in the ERP")  # fails every time
            if rng.random() < 0.04:
                raise TimeoutError("supplier portal timed out")  # a retry usually works
            found = rng.choice([0, 1, 1, 2, 3])
            if found == 0:
                task.record("NO_ATTACHMENTS", ATTACHMENTS_FOUND=0)
            else:
                supplier = (journal.get(task.key) or {}).get("SUPPLIER", "")
                task.record(
                    "COMPLETED",
                    ATTACHMENTS_FOUND=found,
                    fields={"L1 UU Supplier Name": supplier.upper(), "ERROR_MESSAGE": ""},
                )


def _start(
    ctx: multiprocessing.context.SpawnContext, journal: csvjournal.Journal, name: str, seed: int
) -> multiprocessing.process.BaseProcess:
    args = (journal, name, seed, log_json_wanted())
    process = ctx.Process(target=demo_worker, args=args, name=name)
    # Started ignoring Ctrl-C (a spawned Python keeps SIGINT ignored): a terminal's Ctrl-C
    # reaches every process of its group, and each worker would print a traceback; the
    # demo stops them itself (see _stop_workers). A Ctrl-C in the millisecond or so of a
    # start is lost: pressed again, it stops the demo.
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        process.start()
    finally:
        signal.signal(signal.SIGINT, before)
    return process


@contextlib.contextmanager
def _stop_workers(
    workers: dict[str, multiprocessing.process.BaseProcess],
) -> Iterator[dict[str, multiprocessing.process.BaseProcess]]:
    """Stop whichever of ``workers`` still runs when the block ends early (Ctrl-C): their
    rows go back to pending once their leases run out, as after any crash."""
    try:
        yield workers
    finally:
        running = [process for process in workers.values() if process.is_alive()]
        for process in running:
            process.terminate()
            with contextlib.suppress(ProcessLookupError):  # one stopped by _stop_holding
                os.kill(process.pid or 0, signal.SIGCONT)
        for process in running:
            process.join()


# Marks a folder whose orders.csv files a demo wrote (and the next demo may replace): it
# holds a token the demo stored in its journal too, so that a journal made there since by
# other hands (init, a copy; maybe under the old journal's inode number) is never taken for
# the demo's.
DEMO_MARK = ".csvjournal-demo"
_TOKEN_SETTING = "demo_token"


def _prepare(directory: Path | None) -> Path:
    folder = directory or Path(tempfile.mkdtemp(prefix="csvjournal-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder / "orders.csv"
    _check_ours(csv_path)
    for leftover in _demo_files(csv_path):  # an earlier demo's
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    _write_mark(csv_path, None)  # its journal not made yet: see _check_ours
    write_sheet(csv_path)
    return csv_path


def _demo_files(csv_path: Path) -> list[Path]:
    folder = csv_path.parent
    files = [
        csv_path,
        *folder.glob(f"{csv_path.name}.journal*"),
        folder / f"{csv_path.name}.backups",
    ]
    return [path for path in files if path.exists()]


def _check_ours(csv_path: Path) -> None:
    """Refuse to replace files an earlier demo did not write, or a journal in use.

    Raises:
        CliError: the files are someone's own job's, or a process has the journal open.
    """
    found = _demo_files(csv_path)
    if not found:
        return
    journal = csv_path.with_name(f"{csv_path.name}.journal")
    if exporter_alive(csv_path) or in_use(journal):
        raise CliError(f"{journal}: in use by a running process: stop it, or choose another folder")
    if not _ours(csv_path, journal):
        raise CliError(
            f"{found[0]}: not written by an earlier demo (the demo replaces only its own"
            " orders.csv and journal): choose another folder"
        )


def _ours(csv_path: Path, journal: Path) -> bool:
    """Whether the files are a demo's: its journal holds the mark's token; or the demo was
    stopped before it stored one (or it is an older csvjournal's), and the CSV is the
    demo's sheet, and its journal, if any, has no record of anyone's."""
    mark = csv_path.with_name(DEMO_MARK)
    try:
        text = mark.read_text()
    except OSError:
        return False
    try:
        token = json.loads(text)["token"]
    except (ValueError, KeyError, TypeError):  # an older demo's mark: plain text
        token = None
    stored, recorded = _token_and_events(journal) if journal.exists() else (None, False)
    if token is not None and stored == token:
        return True
    return _a_demo_sheet(csv_path) and stored is None and not recorded


def _token_and_events(journal: Path) -> tuple[object, bool]:
    """The demo's token stored in ``journal`` (None if none), and whether it holds any
    event; (None, True) when it cannot be read."""
    try:
        with peek(journal) as conn:  # (the -wal/-shm files it has to make are removed)
            row = conn.execute(
                "SELECT value FROM settings WHERE name = ?", (_TOKEN_SETTING,)
            ).fetchone()
            (recorded,) = conn.execute("SELECT EXISTS (SELECT 1 FROM events)").fetchone()
        return (None if row is None else json.loads(row[0])), bool(recorded)
    except (sqlite3.Error, ValueError):
        return None, True


def _a_demo_sheet(csv_path: Path) -> bool:
    """Whether ``csv_path`` (if there) starts with the demo sheet's header."""
    try:
        with csv_path.open("rb") as file:
            return file.read(len(_HEADER)) == _HEADER
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _mark(csv_path: Path, journal: csvjournal.Journal) -> None:
    """Note in the folder, and in ``journal``, that the demo made it (see :data:`DEMO_MARK`)."""
    token = secrets.token_hex(16)
    with journal._store.write() as conn:
        write_value(conn, _TOKEN_SETTING, token)
    _write_mark(csv_path, token)


def _write_mark(csv_path: Path, token: str | None) -> None:
    csv_path.with_name(DEMO_MARK).write_text(
        json.dumps({"token": token, "note": "made by csvjournal demo"}) + "\n"
    )


def _stop_holding(
    victim: multiprocessing.process.BaseProcess, journal: csvjournal.Journal
) -> list[str]:
    """Stop ``victim`` (SIGSTOP) at a moment it holds a row with an attempt left (its
    last, lost with it, would leave the row spent: no worker takes it over); return the
    rows it holds, or none if no such moment came within a few seconds (the job ended)."""
    deadline = time.monotonic() + _LOOK_SECONDS
    while time.monotonic() < deadline and victim.is_alive():
        os.kill(victim.pid or 0, signal.SIGSTOP)
        held = _held_by(journal, victim.name)
        if held and all(_attempts(journal, key) < MAX_ATTEMPTS for key in held):
            return held
        os.kill(victim.pid or 0, signal.SIGCONT)
        time.sleep(random.uniform(0.001, 0.008))  # not in step with the worker's rhythm
    if victim.is_alive():
        os.kill(victim.pid or 0, signal.SIGSTOP)
    return []


def _attempts(journal: csvjournal.Journal, key: str) -> int:
    return sum(event.status == "IN_PROGRESS" for event in journal.history(key))


def _held_by(journal: csvjournal.Journal, worker: str) -> list[str]:
    frame = journal.to_dataframe()
    busy = frame.loc[frame["STATUS"] == "IN_PROGRESS", "PO_NUMBER"]
    return [key for key in busy if journal.history(key)[-1].worker == worker]


@cli.command()
@click.argument("directory", required=False, type=PathArgument(file_okay=False))
def demo(directory: Path | None) -> None:
    """Run a complete job on built-in sample data: a purchase-order sheet processed by
    worker processes, one of them killed part-way, recovery, and the final CSV."""
    out = stdout_console()
    started = time.perf_counter()
    csv_path = _prepare(directory)
    out.print(f"1. wrote {csv_path}: {ROWS:,} purchase orders (';'-delimited, UTF-8 with BOM)")
    ctx = multiprocessing.get_context("spawn")
    terminal = {"COMPLETED", "NO_ATTACHMENTS"}
    with csvjournal.open(csv_path, key="PO_NUMBER", terminal=terminal) as journal:
        _mark(csv_path, journal)
        with _stop_workers({}) as workers:
            for n in range(1, WORKERS + 1):
                workers[f"demo-{n}"] = _start(ctx, journal, f"demo-{n}", n)
            out.print(f"2. {WORKERS} worker processes claim rows and record what they found")
            held = _crash(out, journal, workers, terminal)
            for process in workers.values():
                process.join()
        report = journal.recover()
        out.print("4. recover(): " + "; ".join(report.lines()))
        journal.flush(timeout=FLUSH_SECONDS)
        _show(out, journal, held)
    elapsed = time.perf_counter() - started
    out.print(f"done in {elapsed:.1f} s. The status sheet: {csv_path}")
    out.print(f"the journal: {csv_path}.journal, backups in {csv_path}.backups/")
    shown = shlex.quote(str(csv_path))  # (pasted as it is: a folder may hold a space)
    out.print(f"next: csvjournal status {shown}; csvjournal history {shown} PO-2026-00097")


def _crash(
    out: Console,
    journal: csvjournal.Journal,
    workers: dict[str, multiprocessing.process.BaseProcess],
    terminal: set[str],
) -> list[str]:
    """Once a third of the rows are done, kill -9 worker demo-2 while it holds a row;
    return the rows it held."""
    while sum(journal.counts().get(s, 0) for s in terminal) < ROWS // 3:
        time.sleep(0.05)
    victim = workers["demo-2"]  # left in: stopped (SIGSTOP) by a Ctrl-C, it is ended too
    held = _stop_holding(victim, journal)
    if victim.is_alive():  # (not if the job ended while it looked)
        os.kill(victim.pid or 0, signal.SIGKILL)
    victim.join()
    del workers["demo-2"]
    done = sum(journal.counts().get(s, 0) for s in terminal)
    then = (
        f"it held {', '.join(held)}: its lease runs out in {LEASE:g} s and another worker"
        " takes the row over"
        if held
        else "it held no row at that moment"
    )
    out.print(f"3. kill -9 of worker demo-2 (pid {victim.pid}) with {done:,} rows done; {then}")
    return held


def _show(out: Console, journal: csvjournal.Journal, held: list[str]) -> None:
    """The rows per status, and the history of a row taken over and of one that failed."""
    table = Table("status", "rows", title="rows per status", title_justify="left")
    for status, count in sorted(journal.counts().items()):
        table.add_row(status, f"{count:,}")
    out.print(table)
    for key in [*held[:1], f"PO-2026-{97:05d}"]:
        out.print(f"history of {key}:")
        for event in journal.history(key):
            note = f"  ({event.note})" if event.note else ""
            fields = {k: v for k, v in event.fields.items() if v}
            when = f"{event.at:%H:%M:%S.%f}"[:-3]
            what = f"{event.status} {fields or ''}".rstrip() + note
            out.print(f"  #{event.seq} {when} {event.worker}: {what}")
