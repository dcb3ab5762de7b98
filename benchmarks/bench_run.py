"""``csvjournal run`` against GNU parallel, side by side in one process run; and ``demo``.

Both run the same trivial command (``true``) once per row of the same 10,000 rows with 8
jobs at a time: GNU parallel reading the keys from a file and keeping a ``--joblog``,
csvjournal from a fresh journal of the CSV (``durability="full"``), keeping the CSV current
as it goes. They alternate, round after round, so the machine's drift hits both alike; the
table gives the medians of rows/s and of the per-round ratio. Then ``csvjournal demo`` is
timed a few times (wall time of the console script).

    python benchmarks/bench_run.py [--rows 10000] [--workers 8] [--rounds 5] [--demos 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import Steal


def _script(name: str) -> str:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name) or name


def csvjournal_run(folder: Path, rows: int, workers: int) -> float:
    """Time ``csvjournal init`` + ``run`` over a fresh CSV; return rows/s of the run."""
    csv = folder / "jobs.csv"
    for leftover in folder.glob("jobs.csv*"):
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    csv.write_text("ID\n" + "".join(f"{i}\n" for i in range(rows)))
    subprocess.run([_script("csvjournal"), "init", str(csv), "--key", "ID"], check=True)
    started = time.perf_counter()
    subprocess.run(
        [_script("csvjournal"), "run", str(csv), "-j", str(workers), "--", "true"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    elapsed = time.perf_counter() - started
    lines = csv.read_text().splitlines()
    assert len(lines) == rows + 1
    assert all(",COMPLETED," in line for line in lines[1:])
    return rows / elapsed


def gnu_parallel(folder: Path, rows: int, workers: int) -> float:
    """Time GNU parallel running ``true`` per key with a job log; return rows/s."""
    keys = folder / "keys.txt"
    keys.write_text("".join(f"{i}\n" for i in range(rows)))
    joblog = folder / "joblog"
    joblog.unlink(missing_ok=True)
    started = time.perf_counter()
    subprocess.run(
        ["parallel", "-j", str(workers), "--joblog", str(joblog), "true", "::::", str(keys)],
        check=True,
    )
    elapsed = time.perf_counter() - started
    assert len(joblog.read_text().splitlines()) == rows + 1  # a header, then one per job
    return rows / elapsed


def demo_seconds(folder: Path) -> float:
    """Wall time of ``csvjournal demo`` into ``folder``."""
    started = time.perf_counter()
    subprocess.run(
        [_script("csvjournal"), "demo", str(folder)], check=True, stdout=subprocess.DEVNULL
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--demos", type=int, default=3)
    args = parser.parse_args()
    steal = Steal()
    if shutil.which("parallel") is None:
        sys.exit("GNU parallel is not installed (Debian: apt-get install parallel)")
    ours, theirs, ratios = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-run-") as name:
        folder = Path(name)
        for round_no in range(args.rounds):
            pair = []
            order = (
                (gnu_parallel, csvjournal_run) if round_no % 2 else (csvjournal_run, gnu_parallel)
            )
            for contender in order:
                pair.append((contender, contender(folder, args.rows, args.workers)))
            rates = dict(pair)
            ours.append(rates[csvjournal_run])
            theirs.append(rates[gnu_parallel])
            ratios.append(ours[-1] / theirs[-1])
            print(
                f"round {round_no + 1}: csvjournal {ours[-1]:,.0f}/s, parallel {theirs[-1]:,.0f}/s"
            )
        demos = [demo_seconds(folder / "demo") for _ in range(args.demos)]
    print()
    print(
        f"{args.rows:,} rows, `true` per row, {args.workers} jobs at a time;"
        f" medians of {args.rounds} rounds"
    )
    print()
    print("| contender | rows/s | ratio to GNU parallel (median, min-max) |")
    print("|---|---:|---|")
    print(f"| GNU parallel --joblog | {statistics.median(theirs):,.0f} | 1 |")
    print(
        f"| csvjournal run (durability full, CSV kept current) | {statistics.median(ours):,.0f}"
        f" | {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) |"
    )
    print()
    print(
        f"`csvjournal demo` wall time: median {statistics.median(demos):.1f} s"
        f" (min {min(demos):.1f}, max {max(demos):.1f}, {len(demos)} runs)"
    )
    print(steal.report())


if __name__ == "__main__":
    main()
