"""record() throughput against raw sqlite3, side by side in one process run.

Raw ``sqlite3`` does the same work per record as ``record()`` (insert an event, upsert the
row) with one ``BEGIN IMMEDIATE`` ... ``COMMIT`` per record, WAL mode and the same
``synchronous``. All contenders keep their files open and take turns in short chunks, round
after round in a rotating order, so the disk's drifting fsync time hits them alike; a
contender's ratio is its time-weighted rate over the raw rate of the same rounds, and
per-round ratios give the spread (median, min, max). A turn is ``--chunk`` records from
each thread: 8 threads record 8 × chunk, so that a turn measures group commit going on,
not mostly the threads' start and end (see RESULTS.md, session 28). The journal core is
measured as issue 2 defines it, on handles with ``export=False``; the same contenders with
an exporter thread follow, for the record, and then issue 2's prototype (``_prototype.py``:
the bare design the issue's targets came from), the ceiling of the design on the day's
machine.

    python benchmarks/bench_record.py [--rounds 45] [--chunk 100] [--batch 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path
from types import ModuleType

from _common import Steal, quiet_logs
from _prototype import INSERT_EVENT, UPSERT_ROW, Prototype, raw_connection

import csvjournal

SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL"}
THREADS = 8
# Issue 2 measures the journal core, a handle with export=False; these rows add the cost of
# an exporter thread in the same process, rewriting the CSV after each burst (three more
# fsyncs on the same disk, and GIL time), for the record.
WITH_EXPORTER = "csvjournal + exporter,"
# Issue 2's targets were measured on this design (see _prototype.py): on the same rounds, its
# ratios are what the day's machine allows any implementation of it.
PROTOTYPE = "issue 2's prototype (bare group commit over raw sqlite3)"


class RawSqlite:
    """Hand-written sqlite3: the baseline."""

    threads = 1

    def __init__(self, folder: Path, durability: str) -> None:
        self.conn = raw_connection(folder / "raw.db", SYNCHRONOUS[durability])
        self.next = 0

    def run(self, n: int) -> float:
        conn, pid = self.conn, os.getpid()
        started = time.perf_counter()
        for i in range(self.next, self.next + n):
            key = f"PO-{i:07d}"
            at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            fields = json.dumps({"ATTACHMENTS_FOUND": str(i % 5)})
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(INSERT_EVENT, (key, "COMPLETED", fields, at, "raw", pid))
            conn.execute(UPSERT_ROW, (key, "COMPLETED", fields))
            conn.execute("COMMIT")
        self.next += n
        return time.perf_counter() - started

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


class _OnJournal:
    threads = 1

    def __init__(
        self,
        folder: Path,
        durability: str,
        *,
        export: bool,
        prototype: bool = False,
        package: ModuleType = csvjournal,  # another version's, for bench_ab.py
    ) -> None:
        name = f"{type(self).__name__.lower()}-{export}-{package.__name__}"
        self.journal: csvjournal.Journal | Prototype
        if prototype:  # the design issue 2 quotes, bare: the day's ceiling for csvjournal
            self.journal = Prototype(folder / f"{name}-prototype.db", SYNCHRONOUS[durability])
        else:
            self.journal = package.open(
                folder / f"{name}.csv",
                key="PO_NUMBER",
                durability=durability,  # type: ignore[arg-type]
                export=export,
            )
        self.export = export
        self.next = 0

    def close(self) -> None:
        """Close the journal (its exporter writes the last records) before its folder goes."""
        self.journal.close()

    def settle(self) -> None:
        """Let the exporter write this turn's records before the next contender's turn
        (its fsyncs would slow whoever runs next)."""
        if isinstance(self.journal, csvjournal.Journal) and self.export:
            self.journal.flush()


class Single(_OnJournal):
    """record() from one thread."""

    def run(self, n: int) -> float:
        record = self.journal.record
        started = time.perf_counter()
        for i in range(self.next, self.next + n):
            record(f"PO-{i:07d}", "COMPLETED", ATTACHMENTS_FOUND=i % 5)
        self.next += n
        return time.perf_counter() - started


class Threads(_OnJournal):
    """record() from 8 threads sharing one Journal (group commit): ``run(n)`` records
    ``n // 8`` from each."""

    threads = THREADS

    def run(self, n: int) -> float:
        per_thread = n // THREADS
        barrier = threading.Barrier(THREADS + 1)
        base = self.next

        def work(t: int) -> None:
            barrier.wait()
            for i in range(per_thread):
                self.journal.record(f"PO-{base}-{t}-{i}", "COMPLETED", ATTACHMENTS_FOUND=i % 5)

        workers = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
        for worker in workers:
            worker.start()
        barrier.wait()
        started = time.perf_counter()
        for worker in workers:
            worker.join()
        self.next += n
        return time.perf_counter() - started


def batch_rate(folder: Path, n: int, durability: str, *, export: bool) -> float:
    """Records/s of one batch() of ``n`` records updating ``n`` existing rows."""
    folder = Path(tempfile.mkdtemp(dir=folder))
    with csvjournal.open(
        folder / "batch.csv",
        key="PO_NUMBER",
        durability=durability,  # type: ignore[arg-type]
        export=export,
    ) as journal:
        with journal.batch():
            for i in range(n):
                journal.record(f"PO-{i:07d}")
        journal.flush()  # the exporter has written the new rows: it idles during the batch
        started = time.perf_counter()
        with journal.batch():
            for i in range(n):
                journal.record(f"PO-{i:07d}", "COMPLETED", ATTACHMENTS_FOUND=i % 5)
        return n / (time.perf_counter() - started)


def raw_bulk_rate(folder: Path, n: int, durability: str) -> float:
    """Records/s of raw sqlite3 executemany of csvjournal's own two statements, one commit:
    the floor under batch(), with every parameter prepared in advance."""
    from csvjournal._writer import _INSERT_EVENT, _UPSERT_ROW

    path = Path(tempfile.mkdtemp(dir=folder)) / "floor.csv"
    csvjournal.open(path, key="PO_NUMBER").close()
    conn = sqlite3.connect(f"{path}.journal", isolation_level=None)
    conn.execute(f"PRAGMA synchronous = {SYNCHRONOUS[durability]}")
    at = "2026-11-28T00:00:00.000Z"
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        _UPSERT_ROW,
        [
            (f"PO-{i:07d}", None, "{}", f'{{"0":"PO-{i:07d}","1":"PENDING"}}', i, 0, None, "")
            for i in range(n)
        ],
    )
    conn.execute("COMMIT")
    events = [(n + i, f"PO-{i:07d}", "COMPLETED", '{"N":"1"}', at, "w", None, 1) for i in range(n)]
    upserts = [
        (
            *(f"PO-{i:07d}", "COMPLETED", f'{{"1":"COMPLETED","2":"{at}","3":"1"}}', "{}"),
            *(n + i, 1, None, "w"),
        )
        for i in range(n)
    ]
    started = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(_INSERT_EVENT, events)
    conn.executemany(_UPSERT_ROW, upserts)
    conn.execute("COMMIT")
    rate = n / (time.perf_counter() - started)
    conn.close()
    return rate


def prototype_batch_rate(folder: Path, n: int, durability: str) -> float:
    """Records/s of issue 2's prototype doing a batch: one transaction updating ``n``
    existing rows with raw sqlite3's two statements by ``executemany``, each record's
    parameters made in Python as it comes (the key, the time, the fields' JSON)."""
    conn = raw_connection(Path(tempfile.mkdtemp(dir=folder)) / "proto.db", SYNCHRONOUS[durability])
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(UPSERT_ROW, [(f"PO-{i:07d}", "PENDING", "{}") for i in range(n)])
    conn.execute("COMMIT")
    pid, chunk = os.getpid(), 5000
    started = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    events: list[tuple[object, ...]] = []
    rows: list[tuple[object, ...]] = []
    for i in range(n):
        key = f"PO-{i:07d}"
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        cells = json.dumps({"ATTACHMENTS_FOUND": str(i % 5)})
        events.append((key, "COMPLETED", cells, at, "prototype", pid))
        rows.append((key, "COMPLETED", cells))
        if len(events) >= chunk or i == n - 1:
            conn.executemany(INSERT_EVENT, events)
            conn.executemany(UPSERT_ROW, rows)
            events, rows = [], []
    conn.execute("COMMIT")
    rate = n / (time.perf_counter() - started)
    conn.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=45)
    parser.add_argument("--chunk", type=int, default=100, help="records a contender's turn")
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--batch-runs", type=int, default=3)
    parser.add_argument("--durability", default="full", choices=sorted(SYNCHRONOUS))
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    args = parser.parse_args()
    quiet_logs()
    steal = Steal()
    base = Path(tempfile.mkdtemp(prefix="csvj-bench-", dir=os.environ.get("BENCH_DIR")))
    contenders: dict[str, RawSqlite | Single | Threads] = {}
    try:
        d = args.durability
        contenders = {
            "raw sqlite3, 1 thread": RawSqlite(base, d),
            "csvjournal record(), 1 thread": Single(base, d, export=False),
            "csvjournal record(), 8 threads": Threads(base, d, export=False),
            f"{WITH_EXPORTER} record(), 1 thread": Single(base, d, export=True),
            f"{WITH_EXPORTER} record(), 8 threads": Threads(base, d, export=True),
            f"{PROTOTYPE}, 1 thread": Single(base, d, export=False, prototype=True),
            f"{PROTOTYPE}, 8 threads": Threads(base, d, export=False, prototype=True),
        }
        seconds: dict[str, list[float]] = {name: [] for name in contenders}
        order = list(contenders)
        for number in range(args.rounds):
            # The order rotates: whoever runs after an export's fsyncs is not always the same.
            for name in order[number % len(order) :] + order[: number % len(order)]:
                contender = contenders[name]
                seconds[name].append(contender.run(args.chunk * contender.threads))
                if not isinstance(contender, RawSqlite):
                    contender.settle()
        batches = {
            export: [batch_rate(base, args.batch, d, export=export) for _ in range(args.batch_runs)]
            for export in (False, True)
        }
        floors = [raw_bulk_rate(base, args.batch, args.durability) for _ in range(args.batch_runs)]
        bare = [prototype_batch_rate(base, args.batch, d) for _ in range(args.batch_runs)]
    finally:
        for contender in contenders.values():
            contender.close()
        shutil.rmtree(base, ignore_errors=True)
    raw = seconds["raw sqlite3, 1 thread"]
    print(
        f"durability={args.durability}; {args.rounds} rounds of {args.chunk} records per"
        f" contender's thread; batch: median of {args.batch_runs} runs of {args.batch:,} records"
    )
    print("| contender | records/s | × raw 1 thread | per-round ratio: median (min–max) |")
    print("|---|---:|---:|---:|")
    for name, times in seconds.items():
        threads = contenders[name].threads
        rate = args.chunk * threads * len(times) / sum(times)
        ratios = [threads * r / t for r, t in zip(raw, times, strict=True)]
        print(
            f"| {name} | {rate:,.0f} | {threads * sum(raw) / sum(times):.2f} |"
            f" {statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}) |"
        )
    for export, rates in batches.items():
        name = WITH_EXPORTER if export else "csvjournal"
        print(f"| {name} one batch() of {args.batch:,} | {statistics.median(rates):,.0f} | | |")
    print(
        f"| raw sqlite3 executemany of the same 2 statements (floor) |"
        f" {statistics.median(floors):,.0f} | | |"
    )
    print(f"| {PROTOTYPE}, one batch of {args.batch:,} | {statistics.median(bare):,.0f} | | |")
    print(steal.report())
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "seconds": seconds,
                    "records_per_turn": {
                        name: args.chunk * contender.threads
                        for name, contender in contenders.items()
                    },
                    "batch": list(batches.items()),
                    "floor": floors,
                    "prototype_batch": bare,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
