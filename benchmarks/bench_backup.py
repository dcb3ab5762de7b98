"""Backup of a 1,000,000-row journal while 4 worker processes record, and what it costs them.

Reuses ``bench_recover.py``'s built journal (``--cache DIR``). The benchmark process holds
the exporting handle (as a job's main process would) and calls ``Journal.backup()``;
worker processes record into random existing rows with ``durability="full"`` the whole
time, noting when each ``record()`` returned. Round after round, a window with a backup
running and a window of the same length without one alternate (their order swapping from
round to round, a short gap between them); each window's records/s comes from the
workers' timestamps. Reported: backup times (also with no writer at all, before the workers
start) and the workers' records/s without and during a backup, as medians, with the
per-round ratio. Backups beyond ``keep_backups=5`` are pruned inside ``backup()``, as in a
long job.

    python benchmarks/bench_backup.py [--rows 1000000] [--rounds 5] [--cache DIR]
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from subprocess import Popen
from typing import Any

from _common import QUIET, Steal, quiet_logs
from bench_recover import cached_journal, copy_journal_folder

import csvjournal

# A worker: record into random rows until the stop file appears, then write down when
# each record() returned (CLOCK_MONOTONIC: one clock for every process of the machine).
_WORKER = QUIET + textwrap.dedent(
    """
    import os, random, sys, time, csvjournal
    path, rows, stop, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    journal = csvjournal.open(path, export=False, durability="full")
    rng = random.Random(os.getpid())
    print("ready", flush=True)
    done = []
    n = 0
    while not os.path.exists(stop):
        journal.record(f"PO-{rng.randrange(rows):08d}", "COMPLETED", NOTE=f"n{n}")
        done.append(time.monotonic())
        n += 1
    journal.close()
    with open(out, "w") as handle:
        handle.write("\\n".join(map(repr, done)))
    """
)


def timed_backup(journal: csvjournal.Journal) -> tuple[float, float, Path]:
    start = time.monotonic()
    folder = journal.backup()
    return start, time.monotonic(), folder


def start_workers(args: argparse.Namespace, csv_path: Path, base: Path) -> list[Popen[str]]:
    procs = []
    for i in range(args.workers):
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _WORKER,
                    str(csv_path),
                    str(args.rows),
                    str(base / "stop"),
                    str(base / f"worker-{i}.txt"),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    for proc in procs:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("a worker process failed to start")
    return procs


def run_windows(
    journal: csvjournal.Journal, args: argparse.Namespace, idle: list[float]
) -> tuple[list[float], list[tuple[str, float, float]]]:
    """Alternate backup windows and quiet windows of the same length; return the backup
    times and every window as (kind, start, end)."""
    busy: list[float] = []
    windows: list[tuple[str, float, float]] = []
    for round_no in range(args.rounds):
        length = statistics.median(busy or idle)
        for kind in ("quiet", "backup") if round_no % 2 == 0 else ("backup", "quiet"):
            if kind == "quiet":
                start = time.monotonic()
                time.sleep(length)
                end = time.monotonic()
            else:
                start, end, _ = timed_backup(journal)
                busy.append(end - start)
            windows.append((kind, start, end))
            time.sleep(args.gap)
        print(f"round {round_no + 1} of {args.rounds} done", file=sys.stderr)
    return busy, windows


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    """Time backups with no writer, then alternate backup and quiet windows while the
    workers record; return the times, the windows and the workers' record times."""
    base = Path(tempfile.mkdtemp(prefix="csvj-backup-", dir=os.environ.get("BENCH_DIR")))
    idle: list[float] = []
    procs: list[Popen[str]] = []
    try:
        built = cached_journal(args.cache, args.rows, base)
        csv_path = copy_journal_folder(built, base / "job")
        journal = csvjournal.open(csv_path)  # the exporter; its session backup is untimed
        journal.flush()
        for _ in range(args.idle_backups):
            start, end, folder = timed_backup(journal)
            idle.append(end - start)
        size = sum(p.stat().st_size for p in folder.iterdir())
        procs = start_workers(args, csv_path, base)
        time.sleep(2 * args.gap)  # warm up
        busy, windows = run_windows(journal, args, idle)
        (base / "stop").touch()
        for proc in procs:
            if proc.wait(timeout=120) != 0:
                raise RuntimeError("a worker process failed")
        journal.close()
        stamps = sorted(
            float(line)
            for i in range(args.workers)
            for line in (base / f"worker-{i}.txt").read_text().split()
        )
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        shutil.rmtree(base, ignore_errors=True)
    return {"idle": idle, "busy": busy, "windows": windows, "stamps": stamps, "size": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cache", type=Path, help="where bench_recover.py keeps the journal")
    parser.add_argument("--workers", type=int, default=4, help="recording worker processes")
    parser.add_argument("--idle-backups", type=int, default=2, help="backups with no writer")
    parser.add_argument("--gap", type=float, default=1.0, help="seconds between windows")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    args = parser.parse_args()
    quiet_logs()
    steal = Steal()
    measured = _measure(args)
    idle, busy, windows = measured["idle"], measured["busy"], measured["windows"]
    stamps, size = measured["stamps"], measured["size"]

    def rate(start: float, end: float) -> float:
        count = bisect.bisect_right(stamps, end) - bisect.bisect_left(stamps, start)
        return count / (end - start)

    quiet = [rate(s, e) for kind, s, e in windows if kind == "quiet"]
    during = [rate(s, e) for kind, s, e in windows if kind == "backup"]
    ratios = [d / q for d, q in zip(during, quiet, strict=True)]
    print(
        f"{args.rows:,} rows; backup = journal + CSV, {size / 1e6:,.0f} MB; {args.workers} worker"
        f" processes record()ing with durability=full, this process exporting;"
        f" {args.rounds} rounds (backup window and equal quiet window, order alternating);"
        f" {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end"
    )
    print("| measure | median | min–max |")
    print("|---|---:|---:|")
    for label, values, unit in (
        (f"backup() time, no writers ({args.idle_backups} runs)", idle, "s"),
        (f"backup() time, {args.workers} workers recording", busy, "s"),
        ("workers' records/s, no backup running", quiet, "/s"),
        ("workers' records/s, during backup()", during, "/s"),
        ("during / without, per round", ratios, "×"),
    ):
        fmt = "{:.2f}" if unit != "/s" else "{:,.0f}"
        print(
            f"| {label} | {fmt.format(statistics.median(values))} |"
            f" {fmt.format(min(values))}–{fmt.format(max(values))} |"
        )
    print(
        f"backup throughput with writers: {size / 1e6 / statistics.median(busy):,.0f} MB/s"
        f" (idle: {size / 1e6 / statistics.median(idle):,.0f} MB/s)"
    )
    print(steal.report())
    if args.json:
        args.json.write_text(
            json.dumps(
                {"idle": idle, "busy": busy, "quiet": quiet, "during": during, "windows": windows},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
