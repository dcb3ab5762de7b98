"""csvjournal against the naive design, side by side: durable updates per second with the
CSV kept current, on a 100,000-row sheet.

The naive design is what people write by hand: for every update, ``pandas.read_csv`` the
sheet, change one row, ``to_csv`` to a temporary file, fsync, and rename it over the sheet.
csvjournal: ``record()`` (durability "full") from N threads of one process while its
exporter keeps the CSV current; the time includes the final ``flush()``, so every update is
in the CSV. csvjournal's rate grows with the number of writers (a group commit takes every
writer waiting for the disk), so it is measured at several N (``--threads``; 8 is the shape
of the journal core's and ``csvjournal run``'s benchmarks). The naive design cannot go
faster with more writers (each update rewrites the whole file, one at a time), so its rate
is its capacity; csvjournal's capacity in a round is its best rate over the N measured (the
last row). The designs take turns, round after round, each on a fresh sheet; a round's
ratio is its csvjournal rate over its naive rate, and the medians are reported.

    python benchmarks/bench_naive.py [--rows 100000] [--naive-updates 5] [--seconds 10]
        [--rounds 3] [--threads 4,8,16]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
from _common import Steal, quiet_logs

import csvjournal


def make_csv(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8") as handle:
        handle.write("ID,STATUS,SUPPLIER,AMOUNT,NOTE,LAST_PROCESSED\n")
        for i in range(rows):
            handle.write(f"PO-{i:08d},PENDING,Supplier {i % 977},{i % 9999}.50,,\n")


def naive_rate(path: Path, rows: int, updates: int) -> float:
    rng = random.Random(1)
    started = time.perf_counter()
    for n in range(updates):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        row = rng.randrange(rows)
        frame.loc[row, "STATUS"] = "COMPLETED"
        frame.loc[row, "NOTE"] = f"update {n}"
        temp = path.with_suffix(".tmp")
        with temp.open("w", encoding="utf-8", newline="") as handle:
            frame.to_csv(handle, index=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    return updates / (time.perf_counter() - started)


def csvjournal_rate(path: Path, rows: int, seconds: float, threads: int = 4) -> float:
    counts = [0] * threads
    with csvjournal.open(path, key="ID") as journal:
        deadline = time.perf_counter() + seconds

        def work(t: int) -> None:
            rng = random.Random(t)
            while time.perf_counter() < deadline:
                journal.record(f"PO-{rng.randrange(rows):08d}", "COMPLETED", NOTE=f"t{t}")
                counts[t] += 1

        started = time.perf_counter()
        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        journal.flush()
        return sum(counts) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--naive-updates", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", default="4,8,16", help="writer threads, comma-separated")
    args = parser.parse_args()
    shapes = [int(n) for n in args.threads.split(",")]
    quiet_logs()
    steal = Steal()
    naive: list[float] = []
    ours: dict[int, list[float]] = {n: [] for n in shapes}
    for round_no in range(args.rounds):
        base = Path(tempfile.mkdtemp(prefix="csvj-naive-", dir=os.environ.get("BENCH_DIR")))
        try:
            make_csv(base / "naive.csv", args.rows)
            naive.append(naive_rate(base / "naive.csv", args.rows, args.naive_updates))
            # the order of the shapes turns each round, so none always runs first
            for threads in shapes[round_no % len(shapes) :] + shapes[: round_no % len(shapes)]:
                sheet = base / f"orders{threads}.csv"
                make_csv(sheet, args.rows)
                ours[threads].append(csvjournal_rate(sheet, args.rows, args.seconds, threads))
        finally:
            shutil.rmtree(base, ignore_errors=True)
        print(
            f"round {round_no + 1}: naive {naive[-1]:.2f}/s, csvjournal "
            + ", ".join(f"{n} threads {ours[n][-1]:,.0f}/s" for n in shapes),
            flush=True,
        )
    print(f"{args.rows:,} rows; durable updates per second with the CSV kept current")
    print(f"medians of {args.rounds} rounds (min-max of the rounds' ratios)")
    print("| design | updates/s | × naive |")
    print("|---|---:|---:|")
    print(f"| naive pandas read-modify-write | {statistics.median(naive):,.2f} | 1 |")
    for threads in shapes:
        ratios = [o / n for o, n in zip(ours[threads], naive, strict=True)]
        print(
            f"| csvjournal, {threads} threads, full durability"
            f" | {statistics.median(ours[threads]):,.0f}"
            f" | {statistics.median(ratios):,.0f} ({min(ratios):,.0f}-{max(ratios):,.0f}) |"
        )
    peaks = [max(ours[n][r] for n in shapes) for r in range(args.rounds)]
    ratios = [p / n for p, n in zip(peaks, naive, strict=True)]
    print(
        "| csvjournal, its capacity (the best of these each round)"
        f" | {statistics.median(peaks):,.0f}"
        f" | {statistics.median(ratios):,.0f} ({min(ratios):,.0f}-{max(ratios):,.0f}) |"
    )
    print(steal.report())


if __name__ == "__main__":
    main()
