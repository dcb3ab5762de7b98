"""claim() throughput from 4 worker processes against raw sqlite3, side by side in one run.

The baseline is hand-written ``sqlite3`` in one process: WAL, ``synchronous=FULL``, one
``BEGIN IMMEDIATE`` ... ``COMMIT`` per claim, each an ``UPDATE`` of one row by key that does
what a claim does to it (status, lease, holder, attempts) on a table made by the journal's
own SQL (its indexes and triggers too). csvjournal runs as a job does: the benchmark
process holds the exporting handle (so the CSV is re-exported after commits), worker
processes open non-exporting handles with ``durability="full"`` and loop until nothing is left:

- ``claim(1)`` only: claims/s (the number the issue's target is about; the turn's rows
  stay leased until it ends, and a claim steps over the live leases before the first free
  row, so the later claims of a turn cost a little more);
- ``claim(1)`` only, 1 worker process: the same without contention between processes;
- ``claim(1)`` then ``record(key, "COMPLETED")``: rows/s, i.e. claims/s of a real job
  (commits/s is twice that);
- diagnostic: ``claim(1)`` only with no exporter running (the CSV is written between
  turns), to show what the exporter's own commits and fsyncs cost the claimers.

Each round every contender works through ``--rows`` fresh rows (added, and for the
claim-only contenders finished afterwards, outside the timing); contenders take turns,
their order rotating from round to round, so the disk's drifting fsync time hits them
alike. A contender's ratio is its rate over the raw rate of the same round: the median
ratio, its spread, and the median rate are reported.

    python benchmarks/bench_claim.py [--rounds 9] [--rows 2000] [--workers 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from _common import QUIET, Steal, quiet_logs

import csvjournal

TARGET_RATIO = 0.5


# One worker process: opens every contender's journal once, then runs a command per line
# of stdin ("claim PATH" or "cycle PATH") until no row is left, answering "count seconds".
_WORKER = QUIET + textwrap.dedent(
    """
    import sys, time, csvjournal
    journals = {}
    print("ready", flush=True)
    for line in sys.stdin:
        mode, path = line.split()
        journal = journals.get(path)
        if journal is None:
            journal = journals[path] = csvjournal.open(path, export=False, durability="full")
        claim, record = journal.claim, journal.record
        n = 0
        started = time.perf_counter()
        if mode == "claim":
            while claim(1, lease=3600):
                n += 1
        else:
            while keys := claim(1, lease=3600):
                record(keys[0], "COMPLETED")
                n += 1
        print(n, time.perf_counter() - started, flush=True)
    for journal in journals.values():
        journal.close()
    """
)


def journal_schema(folder: Path) -> list[str]:
    """The SQL that makes a journal's ``rows`` and ``free_rows`` (tables, indexes, triggers)."""
    path = Path(tempfile.mkdtemp(dir=folder)) / "shape.csv"
    csvjournal.open(path, key="PO_NUMBER", export=False, keep_backups=0).close()
    conn = sqlite3.connect(f"{path}.journal")
    try:
        return [
            sql
            for (sql,) in conn.execute(
                "SELECT sql FROM sqlite_master WHERE tbl_name IN ('rows', 'free_rows')"
                " AND sql IS NOT NULL ORDER BY type = 'trigger', rowid"
            )
        ]
    finally:
        conn.close()


class RawSqlite:
    """Hand-written sqlite3, one process, one UPDATE per commit: the baseline."""

    name = "raw sqlite3 UPDATE, 1 process"

    def __init__(self, folder: Path, rows: int) -> None:
        self.conn = sqlite3.connect(folder / "raw.db", isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = FULL")
        for statement in journal_schema(folder):  # the journal's rows, indexes and triggers
            self.conn.execute(statement)
        self.conn.execute("BEGIN")
        self.conn.executemany(
            "INSERT INTO rows (key, status, cells) VALUES (?, 'PENDING', ?)",
            ((f"PO-{i:08d}", f'{{"0":"PO-{i:08d}","1":"PENDING"}}') for i in range(rows)),
        )
        self.conn.execute("COMMIT")
        self.next = 0

    def run(self, n: int) -> tuple[int, float]:
        conn, holder = self.conn, f"raw:{os.getpid()}"
        started = time.perf_counter()
        for i in range(self.next, self.next + n):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "UPDATE rows SET status = 'IN_PROGRESS', lease_until = ?, holder = ?,"
                " attempts = attempts + 1 WHERE key = ?",
                (time.time() + 3600, holder, f"PO-{i:08d}"),
            )
            conn.execute("COMMIT")
        self.next += n
        return n, time.perf_counter() - started


class Workers:
    """The worker processes, shared by the csvjournal contenders."""

    def __init__(self, count: int) -> None:
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-c", _WORKER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(count)
        ]
        for proc in self.procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a worker process failed to start")

    def run(self, count: int, mode: str, path: Path) -> tuple[int, float]:
        """Have ``count`` workers run ``mode`` on ``path``; return (rows, wall seconds)."""
        procs = self.procs[:count]
        started = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(f"{mode} {path}\n")
            proc.stdin.flush()
        total = 0
        for proc in procs:
            assert proc.stdout is not None
            answer = proc.stdout.readline().split()
            if not answer:
                raise RuntimeError("a worker process died")
            total += int(answer[0])
        return total, time.perf_counter() - started

    def close(self) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in self.procs:
            proc.wait(timeout=60)


class OnJournal:
    """A csvjournal contender: its own journal, exported by this process."""

    def __init__(
        self,
        folder: Path,
        name: str,
        workers: Workers,
        count: int,
        mode: str,
        *,
        export: bool = True,
    ) -> None:
        self.name = name
        self.path = folder / f"{mode}-{count}-{'export' if export else 'quiet'}.csv"
        self.journal = csvjournal.open(self.path, key="PO_NUMBER", durability="full", export=export)
        self.workers, self.count, self.mode = workers, count, mode
        self.next = 0

    def run(self, n: int) -> tuple[int, float]:
        keys = [f"PO-{i:08d}" for i in range(self.next, self.next + n)]
        self.next += n
        with self.journal.batch():  # fresh PENDING rows, outside the timing
            for key in keys:
                self.journal.record(key)
        self.journal.flush()
        done, seconds = self.workers.run(self.count, self.mode, self.path)
        if done != n:
            raise RuntimeError(f"{self.name}: {done} rows claimed, {n} expected")
        if self.mode == "claim":  # finish them: leased rows left open would slow claims
            with self.journal.batch():
                for key in keys:
                    self.journal.record(key, "COMPLETED")
        self.journal.flush()
        return done, seconds


def _run_rounds(args: argparse.Namespace) -> dict[str, list[float]]:
    """Every contender's seconds for its turn of ``args.rows`` rows, round by round."""
    base = Path(tempfile.mkdtemp(prefix="csvj-claim-", dir=os.environ.get("BENCH_DIR")))
    workers = Workers(args.workers)
    try:
        w = args.workers
        contenders: list[RawSqlite | OnJournal] = [
            RawSqlite(base, args.rounds * args.rows),
            OnJournal(base, f"csvjournal claim(1), {w} processes", workers, w, "claim"),
            OnJournal(base, "csvjournal claim(1), 1 process", workers, 1, "claim"),
            OnJournal(
                base,
                f"diagnostic: claim(1), {w} processes, no exporter running",
                workers,
                w,
                "claim",
                export=False,
            ),
            OnJournal(base, f"csvjournal claim(1) + record(), {w} processes", workers, w, "cycle"),
        ]
        seconds: dict[str, list[float]] = {c.name: [] for c in contenders}
        for round_no in range(args.rounds):
            shift = round_no % len(contenders)
            for contender in contenders[shift:] + contenders[:shift]:
                _, elapsed = contender.run(args.rows)
                seconds[contender.name].append(elapsed)
            print(f"round {round_no + 1} of {args.rounds} done", file=sys.stderr)
        for contender in contenders:
            if isinstance(contender, OnJournal):
                contender.journal.close()
    finally:
        workers.close()
        shutil.rmtree(base, ignore_errors=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--rows", type=int, default=2000, help="rows a contender's turn")
    parser.add_argument("--workers", type=int, default=4, help="worker processes")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    args = parser.parse_args()
    quiet_logs()
    steal = Steal()
    seconds = _run_rounds(args)
    raw = seconds[RawSqlite.name]
    print(
        f"durability=full (raw: synchronous=FULL); {args.rounds} rounds of {args.rows:,} rows"
        f" per contender, order rotating; {os.cpu_count()} CPUs,"
        f" load average {os.getloadavg()[0]:.1f} at the end"
    )
    print(
        "| contender | claims/s: median (all rounds) | × raw (all rounds) |"
        " × raw per round: median (min–max) | commits/s (median) |"
    )
    print("|---|---:|---:|---:|---:|")
    target = None
    for name, times in seconds.items():
        rates = [args.rows / t for t in times]
        ratios = [r / t for r, t in zip(raw, times, strict=True)]
        commits = 2 if "record()" in name else 1
        overall = args.rows * len(times) / sum(times)
        print(
            f"| {name} | {statistics.median(rates):,.0f} ({overall:,.0f}) |"
            f" {sum(raw) / sum(times):.2f} | {statistics.median(ratios):.2f}"
            f" ({min(ratios):.2f}–{max(ratios):.2f}) | {commits * statistics.median(rates):,.0f} |"
        )
        if name.startswith("csvjournal claim(1), ") and "1 process" not in name:
            target = statistics.median(ratios)
    if target is not None:
        verdict = "met" if target >= TARGET_RATIO else "MISSED"
        print(f"target claims/s >= {TARGET_RATIO}x raw (median per-round ratio): {verdict}")
    print(steal.report())
    if args.json:
        args.json.write_text(json.dumps({"seconds": seconds, "args": vars(args)}, default=str))


if __name__ == "__main__":
    main()
