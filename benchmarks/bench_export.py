"""Export speed against the sqlite3 command-line shell, side by side in one process run.

Builds a CSV of N rows x 10 columns (~120 bytes a row), imports it into a journal, then
times, round after round: ``sqlite3 -csv`` selecting the same data from a plain table
(the baseline), a cold full export by a fresh process (``Journal.export(path)``; its peak
memory is reported against the CSV's size), and a warm re-export by the running exporter
after 1% of the rows changed.

    python benchmarks/bench_export.py [--rows 1000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import Steal, quiet_logs

import csvjournal

COLUMNS = [
    "ID",
    "STATUS",
    "SUPPLIER",
    "AMOUNT",
    "CURRENCY",
    "CITY",
    "NOTE",
    "CODE",
    "LAST_PROCESSED",
    "ERROR_MESSAGE",
]

_COLD = """
import sys, time, structlog, logging
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
import csvjournal
with csvjournal.open(sys.argv[1], export=False) as journal:
    started = time.perf_counter()  # the export of a freshly opened journal
    journal.export(sys.argv[2])
    seconds = time.perf_counter() - started
# VmHWM, not ru_maxrss: the latter keeps the parent's peak across fork and exec
peak = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(seconds, int(peak) * 1024)
"""


def make_csv(path: Path, rows: int) -> None:
    rng = random.Random(7)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        for i in range(rows):
            writer.writerow(
                [
                    f"PO-{i:08d}",
                    "PENDING",
                    f"Supplier {rng.randrange(5000)}",
                    f"{rng.randrange(10**6) / 100:.2f}",
                    "EUR",
                    f"City {rng.randrange(300)}",
                    "note, with a comma" if i % 10 == 0 else "plain note",
                    f"{rng.randrange(10**6):06d}",
                    "2026-11-28T00:00:00.000Z",
                    "",
                ]
            )


def plain_table(csv_path: Path, db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute(f"CREATE TABLE t ({', '.join(f'c{i} TEXT' for i in range(len(COLUMNS)))})")
    with csv_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        conn.executemany(f"INSERT INTO t VALUES ({', '.join('?' * len(COLUMNS))})", reader)
    conn.commit()
    conn.close()


def sqlite_cli(db: Path, out: Path) -> float:
    started = time.perf_counter()
    with out.open("wb") as handle:
        subprocess.run(["sqlite3", "-csv", str(db), "SELECT * FROM t"], stdout=handle, check=True)
    return time.perf_counter() - started


def cold_export(csv_path: Path, out: Path) -> tuple[float, int]:
    done = subprocess.run(
        [sys.executable, "-c", _COLD, str(csv_path), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    seconds, peak = done.stdout.split()
    return float(seconds), int(peak)


def warm_export(journal: csvjournal.Journal, rows: int, round_no: int) -> float:
    rng = random.Random(round_no)
    with journal.batch():
        for i in rng.sample(range(rows), rows // 100):
            journal.record(f"PO-{i:08d}", "COMPLETED", NOTE=f"round {round_no}")
    exporter = journal._exporter
    assert exporter is not None
    assert exporter.leading
    started = time.perf_counter()
    journal.flush()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    quiet_logs()
    steal = Steal()
    base = Path(tempfile.mkdtemp(prefix="csvj-export-", dir=os.environ.get("BENCH_DIR")))
    try:
        csv_path = base / "orders.csv"
        make_csv(csv_path, args.rows)
        size = csv_path.stat().st_size
        plain_table(csv_path, base / "plain.db")
        with csvjournal.open(csv_path, key="ID") as journal:
            journal.flush()
            cli, cold, warm, peaks = [], [], [], []
            for round_no in range(args.rounds):
                cli.append(sqlite_cli(base / "plain.db", base / "cli.csv"))
                seconds, peak = cold_export(csv_path, base / "cold.csv")
                cold.append(seconds)
                peaks.append(peak)
                warm.append(warm_export(journal, args.rows, round_no))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    base_s = statistics.median(cli)
    mb = size / 1e6
    print(f"{args.rows:,} rows x {len(COLUMNS)} columns, CSV {mb:.0f} MB, medians of {args.rounds}")
    print("| export | seconds | × sqlite3 -csv |")
    print("|---|---:|---:|")
    for name, times in (
        ("sqlite3 -csv of a plain table", cli),
        ("csvjournal cold (freshly opened, another process)", cold),
        ("csvjournal warm, 1% rows changed", warm),
    ):
        seconds = statistics.median(times)
        print(f"| {name} | {seconds:.2f} | {seconds / base_s:.2f} |")
    print(f"cold export peak memory: {max(peaks) / 1e6:.0f} MB = {max(peaks) / size:.1f}x the CSV")
    print(steal.report())


if __name__ == "__main__":
    main()
