"""Staleness: how long after record() returns does the CSV on disk show the record?

One exporter process keeps the CSV of an N-row journal current; worker processes record
(paced, R records/s in all) a unique token into existing rows; a watcher process notices
every new version of the CSV (polling every millisecond, hard-linking each) and, after the
run, reads each to note when each token first appeared. Reports the percentiles of (first
seen - record() returned), medians over rounds.

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
from typing import Any

from _common import QUIET, Steal, cpu_times, stolen

_EXPORTER = QUIET + textwrap.dedent(
    """
    import sys, time, csvjournal
    journal = csvjournal.open(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.read()
    journal.close()
    """
)
_WORKER = QUIET + textwrap.dedent(
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
# The watcher notices each new version of the CSV (a new inode) and hard-links it (the link
# holds that version, whatever replaces it next), noting the time after the link: a moment
# when that version was surely on disk, never earlier. It reads the versions only after the run,
# so reading does not delay noticing the next one, nor take CPU from the job meanwhile.
_WATCHER = textwrap.dedent(
    """
    import os, re, sys, time
    path, stop, out, keep = sys.argv[1:5]
    versions = []
    last = None
    probe = os.path.join(keep, "probe")
    while not os.path.exists(stop):
        time.sleep(0.001)
        try:
            if os.stat(path).st_ino == last:  # a stat writes nothing: no load on the disk
                continue
            os.link(path, probe)
        except FileNotFoundError:
            continue
        now = time.time()
        last = os.stat(probe).st_ino
        kept = os.path.join(keep, str(len(versions)))
        os.rename(probe, kept)
        versions.append((kept, now))
    pattern = re.compile(rb"tok\\w+?y")
    seen = {}
    for kept, at in versions:
        with open(kept, "rb") as handle:
            for token in pattern.findall(handle.read()):
                seen.setdefault(token.decode(), at)
        os.unlink(kept)
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


def _start_exporter_and_watcher(
    csv_path: Path, base: Path, procs: list[subprocess.Popen[Any]]
) -> tuple[subprocess.Popen[str], subprocess.Popen[bytes], Path]:
    """Start the exporting process and the watcher of the CSV's versions (added to
    ``procs``); return both, and the file whose creation stops the watcher."""
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
    versions = base / "versions"
    versions.mkdir()
    watcher = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _WATCHER,
            str(csv_path),
            str(stop),
            str(base / "seen"),
            str(versions),
        ]
    )
    procs.append(watcher)
    return exporter, watcher, stop


def run(rows: int, rate: float, seconds: float, workers: int) -> list[float]:
    base = Path(tempfile.mkdtemp(prefix="csvj-stale-", dir=os.environ.get("BENCH_DIR")))
    procs: list[subprocess.Popen[Any]] = []
    try:
        csv_path = base / "orders.csv"
        make_csv(csv_path, rows)
        subprocess.run(
            [
                sys.executable,
                "-c",
                QUIET + f"import csvjournal; csvjournal.open({str(csv_path)!r}, key='ID').close()",
            ],
            check=True,
        )
        exporter, watcher, stop = _start_exporter_and_watcher(csv_path, base, procs)
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


def _percentiles(delays: list[float]) -> dict[str, float]:
    seen = sorted(d for d in delays if d != float("inf"))
    cuts = statistics.quantiles(seen, n=100)
    return {"p50": cuts[49], "p90": cuts[89], "p99": cuts[98], "max": seen[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    steal = Steal()
    rounds = []
    for number in range(args.rounds):
        before = cpu_times()
        delays = run(args.rows, args.rate, args.seconds, args.workers)
        found = _percentiles(delays)
        found["steal"] = stolen(before, cpu_times())
        found["rate"] = len(delays) / args.seconds
        found["never"] = sum(1 for d in delays if d == float("inf"))
        rounds.append(found)
        print(
            f"round {number + 1}: {found['rate']:,.0f} records/s; staleness ms p50"
            f" {found['p50'] * 1000:.0f}, p90 {found['p90'] * 1000:.0f}, p99"
            f" {found['p99'] * 1000:.0f}, max {found['max'] * 1000:.0f}; never seen (overwritten"
            f" before an export showed them): {found['never']:.0f}; CPU stolen by the"
            f" hypervisor: {found['steal']:.1%}",
            flush=True,
        )
    print(f"{args.rows:,} rows, {args.rate:,.0f} records/s offered for {args.seconds:g} s")
    print("| staleness | median of rounds (min–max) |")
    print("|---|---:|")
    for name in ("p50", "p90", "p99", "max"):
        values = [r[name] * 1000 for r in rounds]
        print(
            f"| {name} | {statistics.median(values):.0f} ms ({min(values):.0f}–{max(values):.0f}) |"
        )
    rates = [r["rate"] for r in rounds]
    spread = f"{min(rates):,.0f}–{max(rates):,.0f}"
    print(f"| records/s reached | {statistics.median(rates):,.0f} ({spread}) |")
    print(steal.report())


if __name__ == "__main__":
    main()
