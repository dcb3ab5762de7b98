"""record() throughput against raw sqlite3, side by side in one process run.

Each round runs every contender once, in turn, on fresh files in the same folder, so the
machine's noise hits all of them alike; the report gives medians over the rounds.

    python benchmarks/bench_record.py [--rounds 5] [--records 2000] [--batch 100000]

Baseline: raw ``sqlite3`` doing the same work per record as ``record()`` (insert an event,
upsert the row) with one commit per record, WAL mode and the same ``synchronous``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog

import csvjournal

SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL"}


def raw_sqlite(folder: Path, n: int, durability: str) -> float:
    """Records/s of hand-written sqlite3: one BEGIN IMMEDIATE..COMMIT per record."""
    conn = sqlite3.connect(folder / "raw.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {SYNCHRONOUS[durability]}")
    conn.execute(
        "CREATE TABLE rows (pos INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE,"
        " status TEXT NOT NULL, cells TEXT NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, key TEXT NOT NULL, status TEXT,"
        " fields TEXT NOT NULL, at TEXT NOT NULL, worker TEXT NOT NULL, pid INTEGER)"
    )
    pid = os.getpid()
    started = time.perf_counter()
    for i in range(n):
        key = f"PO-{i:07d}"
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        fields = json.dumps({"ATTACHMENTS_FOUND": str(i % 5)})
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO events (key, status, fields, at, worker, pid) VALUES (?,?,?,?,?,?)",
            (key, "COMPLETED", fields, at, "raw", pid),
        )
        conn.execute(
            "INSERT INTO rows (key, status, cells) VALUES (?, ?, ?) ON CONFLICT (key)"
            " DO UPDATE SET status = excluded.status, cells = excluded.cells",
            (key, "COMPLETED", fields),
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return n / elapsed


def _journal(folder: Path, durability: str) -> csvjournal.Journal:
    return csvjournal.open(folder / "orders.csv", key="PO_NUMBER", durability=durability)  # type: ignore[arg-type]


def csvj_single(folder: Path, n: int, durability: str) -> float:
    """Records/s of record() from one thread."""
    with _journal(folder, durability) as journal:
        started = time.perf_counter()
        for i in range(n):
            journal.record(f"PO-{i:07d}", "COMPLETED", ATTACHMENTS_FOUND=i % 5)
        return n / (time.perf_counter() - started)


def csvj_threads(folder: Path, n: int, durability: str, threads: int = 8) -> float:
    """Records/s of record() from ``threads`` threads sharing one Journal (group commit)."""
    with _journal(folder, durability) as journal:
        per_thread = n // threads
        barrier = threading.Barrier(threads + 1)

        def work(t: int) -> None:
            barrier.wait()
            for i in range(per_thread):
                journal.record(f"PO-{t}-{i:07d}", "COMPLETED", ATTACHMENTS_FOUND=i % 5)

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        barrier.wait()
        started = time.perf_counter()
        for w in workers:
            w.join()
        return per_thread * threads / (time.perf_counter() - started)


def csvj_batch(folder: Path, n: int, durability: str) -> float:
    """Records/s of one batch() of ``n`` records updating ``n`` existing rows."""
    with _journal(folder, durability) as journal:
        with journal.batch():
            for i in range(n):
                journal.record(f"PO-{i:07d}")
        started = time.perf_counter()
        with journal.batch():
            for i in range(n):
                journal.record(f"PO-{i:07d}", "COMPLETED", ATTACHMENTS_FOUND=i % 5)
        return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--batch-rounds", type=int, default=3)
    parser.add_argument("--durability", default="full", choices=sorted(SYNCHRONOUS))
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    contenders: dict[str, Callable[[Path], float]] = {
        "raw sqlite3, 1 thread": lambda d: raw_sqlite(d, args.records, args.durability),
        "csvjournal, 1 thread": lambda d: csvj_single(d, args.records, args.durability),
        "csvjournal, 8 threads": lambda d: csvj_threads(d, args.records * 2, args.durability),
        "csvjournal, one batch()": lambda d: csvj_batch(d, args.batch, args.durability),
    }
    results: dict[str, list[float]] = {name: [] for name in contenders}
    ratios: dict[str, list[float]] = {name: [] for name in contenders}
    base = Path(tempfile.mkdtemp(prefix="csvj-bench-", dir=os.environ.get("BENCH_DIR")))
    try:
        for round_no in range(args.rounds):
            # The disk's fsync time drifts: each contender is compared with the raw run of
            # its own round, and the ratios' median is reported beside the rates' medians.
            for name, run in contenders.items():
                if "batch" in name and round_no >= args.batch_rounds:
                    continue
                folder = base / f"{round_no}-{len(results[name])}-{name[:3]}"
                folder.mkdir()
                results[name].append(run(folder))
                ratios[name].append(results[name][-1] / results["raw sqlite3, 1 thread"][-1])
                shutil.rmtree(folder)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(
        f"durability={args.durability}, {args.rounds} rounds ({args.records} records a run;"
        f" batch: {args.batch_rounds} rounds of {args.batch:,}), medians"
    )
    print("| contender | records/s | × raw 1 thread (median of per-round ratios) |")
    print("|---|---:|---:|")
    for name, rates in results.items():
        if not rates:
            continue
        print(
            f"| {name} | {statistics.median(rates):,.0f} | {statistics.median(ratios[name]):.2f} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"rates": results, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
