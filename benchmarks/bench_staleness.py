"""Staleness: how long after record() returns does the CSV on disk show the record?

One exporter process keeps the CSV of an N-row journal current; worker processes record
(paced, R records/s in all) a unique token into existing rows; a watcher process polls the
CSV, reads every new version and notes when each token first appears. Reports the
percentiles of (first seen - record() returned).

    python benchmarks/bench_staleness.py [--rows 100000] [--rate 2000] [--seconds 30]
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

_QUIET = (
    "import structlog, logging\n"
    "structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))\n"
)

_EXPORTER = _QUIET + textwrap.dedent(
    """
    import sys, time, csvjournal
    journal = csvjournal.open(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.read()
    journal.close()
    """
)
_WORKER = _QUIET + textwrap.dedent(
    """
    import random, sys, time, csvjournal
    path, name, rows, rate, seconds, out = sys.argv[1:7]
    rows, rate, seconds = int(rows), float(rate), float(seconds)
    journal = csvjournal.open(path, export=False)
    rng = random.Random(name)
    done = []
    start = time.time()
    n = 0
    while time.time() - start < seconds:
        delay = start + n / rate - time.time()
        if delay > 0:
            time.sleep(delay)
        token = f"tok{name}x{n:07d}y"
        journal.record(f"PO-{rng.randrange(rows):08d}", "COMPLETED", NOTE=token)
        done.append((token, time.time()))
        n += 1
    journal.close()
    with open(out, "w") as handle:
        handle.writelines(f"{t} {at!r}\\n" for t, at in done)
    """
)
_WATCHER = textwrap.dedent(
    """
    import os, re, sys, time
    path, stop, out = sys.argv[1:4]
    pattern = re.compile(rb"tok\\w+?y")
    seen = {}
    last = None
    while not os.path.exists(stop):
        try:
            info = os.stat(path)
        except FileNotFoundError:
            continue
        version = (info.st_ino, info.st_mtime_ns, info.st_size)
        if version != last:
            now = time.time()
            last = version
            with open(path, "rb") as handle:
                data = handle.read()
            for token in pattern.findall(data):
                seen.setdefault(token.decode(), now)
        time.sleep(0.002)
    with open(out, "w") as handle:
        handle.writelines(f"{t} {at!r}\\n" for t, at in seen.items())
    """
)


def make_csv(path: Path, rows: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["ID", "STATUS", "SUPPLIER", "AMOUNT", "NOTE", "LAST_PROCESSED"])
        for i in range(rows):
            writer.writerow(
                [f"PO-{i:08d}", "PENDING", f"Supplier {i % 977}", f"{i % 9999}.50", "", ""]
            )


def _read(path: Path) -> dict[str, float]:
    return {
        token: float(at) for token, at in (line.split() for line in path.read_text().splitlines())
    }


def run(rows: int, rate: float, seconds: float, workers: int) -> list[float]:
    base = Path(tempfile.mkdtemp(prefix="csvj-stale-", dir=os.environ.get("BENCH_DIR")))
    procs: list[subprocess.Popen[str]] = []
    try:
        csv_path = base / "orders.csv"
        make_csv(csv_path, rows)
        subprocess.run(
            [
                sys.executable,
                "-c",
                _QUIET + f"import csvjournal; csvjournal.open({str(csv_path)!r}, key='ID').close()",
            ],
            check=True,
        )
        exporter = subprocess.Popen(
            [sys.executable, "-c", _EXPORTER, str(csv_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(exporter)
        assert exporter.stdout is not None
        assert exporter.stdout.readline().strip() == "ready"
        stop = base / "stop"
        watcher = subprocess.Popen(
            [sys.executable, "-c", _WATCHER, str(csv_path), str(stop), str(base / "seen")]
        )
        procs.append(watcher)
        outs = [base / f"done-{w}" for w in range(workers)]
        runners = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _WORKER,
                    str(csv_path),
                    str(w),
                    str(rows),
                    str(rate / workers),
                    str(seconds),
                    str(out),
                ]
            )
            for w, out in enumerate(outs)
        ]
        procs.extend(runners)
        for runner in runners:
            runner.wait()
        time.sleep(2)  # let the exporter catch up with the last records
        stop.touch()
        watcher.wait()
        exporter.communicate("")
        seen = _read(base / "seen")
        delays = []
        for out in outs:
            for token, returned in _read(out).items():
                delays.append(seen.get(token, float("inf")) - returned)
        return delays
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    delays = sorted(run(args.rows, args.rate, args.seconds, args.workers))
    missing = sum(1 for d in delays if d == float("inf"))
    cuts = statistics.quantiles([d for d in delays if d != float("inf")], n=100)
    print(
        f"{args.rows:,} rows, {len(delays):,} records at {args.rate:,.0f}/s for {args.seconds:g} s"
    )
    print(
        f"staleness ms: p50 {cuts[49] * 1000:.0f}, p90 {cuts[89] * 1000:.0f}, "
        f"p99 {cuts[98] * 1000:.0f}, max {max(d for d in delays if d != float('inf')) * 1000:.0f}; "
        f"never seen: {missing}"
    )


if __name__ == "__main__":
    main()
