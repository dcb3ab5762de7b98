"""Restart after a crash: open + recover() + pending() on a killed 1,000,000-row job.

Builds a journal of N rows (importing :func:`bench_export.make_csv`'s CSV; ``--cache DIR``
keeps it for later runs, and for ``bench_backup.py``), runs a job on a copy of it (one
exporting process, worker processes claiming rows and recording them with
``durability="full"``), kills the whole job with SIGKILL and keeps the crashed files as they
are. Then, round after round, each on a fresh copy of that crashed state, a fresh process
times ``csvjournal.open(csv)``, ``journal.recover()`` and ``journal.pending()`` (with the
default ``keep_backups=5``, whose session backup copies the journal at open, and with
``keep_backups=0``), next to the baseline: the ``sqlite3`` command-line shell counting the
rows of the same crashed file (``SELECT count(*) FROM rows``, WAL recovery included). The
variants' order rotates from round to round; medians are reported, with a breakdown of
where open and recover spend their time (timed by wrapping csvjournal's internals in the
measuring process), and a floor: the same checks and reads done by Python's ``sqlite3``
alone. The page cache is warm, as after a crash of the job but not of the machine.

    python benchmarks/bench_recover.py [--rows 1000000] [--rounds 3] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import Steal, quiet_logs
from _recover_scripts import EXPORTER, FLOOR, MEASURE, WORKER
from bench_export import make_csv

import csvjournal

KEY = "ID"
CSV_NAME = "orders.csv"
TARGET_SECONDS = 3.0


def _schema_head() -> str:
    try:
        from csvjournal._migrate import head_revision

        return head_revision()
    except Exception:  # a private helper: without it, trust the cache
        return "unknown"


def _copy_files(source: Path, target: Path) -> None:
    """Copy a folder's files (the journal, its WAL, the CSV, backups...) as they are."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    os.sync()  # no write-back of the copy running under the measurement


def cached_journal(cache: Path | None, rows: int, scratch: Path) -> Path:
    """A folder holding ``orders.csv`` and its closed journal of ``rows`` rows (import
    done, no backups); built into ``cache`` (reused when there) or into ``scratch``."""
    marker = {"rows": rows, "schema": _schema_head(), "csv": "bench_export.make_csv"}
    folder = (cache if cache is not None else scratch) / f"journal-{rows}"
    done = folder / "built.json"
    if done.exists() and json.loads(done.read_text()) == marker:
        print(f"using the journal cached in {folder}", file=sys.stderr)
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    csv_path = folder / CSV_NAME
    started = time.perf_counter()
    make_csv(csv_path, rows)
    csvjournal.open(csv_path, key=KEY, keep_backups=0).close()
    shutil.rmtree(f"{csv_path}.backups", ignore_errors=True)
    done.write_text(json.dumps(marker))
    print(
        f"built a {rows:,}-row journal in {time.perf_counter() - started:.0f} s into {folder}",
        file=sys.stderr,
    )
    return folder


def copy_journal_folder(built: Path, target: Path) -> Path:
    """Copy the built journal (not the marker) into ``target``; return the CSV's path."""
    target.mkdir(parents=True, exist_ok=True)
    for name in (CSV_NAME, f"{CSV_NAME}.journal"):
        shutil.copyfile(built / name, target / name)
    os.sync()
    return target / CSV_NAME


def crash_a_job(csv_path: Path, workers: int, seconds: float, lease: float) -> dict[str, int]:
    """Run a job on ``csv_path`` for ``seconds`` once its exporter is up, then SIGKILL every
    one of its processes at once (one process group); return what the workers reported."""
    exporter = subprocess.Popen(
        [sys.executable, "-c", EXPORTER, str(csv_path)],
        stdout=subprocess.PIPE,
        text=True,
        process_group=0,  # a new group, the job's: killed as one
    )
    group = exporter.pid
    procs = [exporter]
    try:
        assert exporter.stdout is not None
        if exporter.stdout.readline().strip() != "ready":
            raise RuntimeError("the job's exporter failed to start")
        for _ in range(workers):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", WORKER, str(csv_path), str(lease)],
                    stdout=subprocess.PIPE,
                    text=True,
                    process_group=group,
                )
            )
        for proc in procs[1:]:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a job worker failed to start")
        time.sleep(seconds)
    finally:
        os.killpg(group, signal.SIGKILL)
        for proc in procs:
            proc.wait()
    recorded = 0
    for proc in procs[1:]:
        assert proc.stdout is not None
        lines = proc.stdout.read().split()
        recorded += int(lines[-1]) if lines else 0
    return {"recorded (to the nearest 500 per worker)": recorded}


def crashed_state(crashed: Path, work: Path) -> dict[str, int]:
    """What the crash left to recover (read from a throwaway copy)."""
    _copy_files(crashed, work)
    conn = sqlite3.connect(work / f"{CSV_NAME}.journal")
    try:
        (leased,) = conn.execute(
            "SELECT count(*) FROM rows WHERE status = 'IN_PROGRESS'"
        ).fetchone()
        (last,) = conn.execute("SELECT max(seq) FROM events").fetchone()
        exported = conn.execute("SELECT value FROM settings WHERE name = 'csv_seq'").fetchone()
    finally:
        conn.close()
    behind = last - int(json.loads(exported[0])) if exported else -1
    return {"rows IN_PROGRESS": leased, "events the CSV is behind": behind}


def cli_count(journal: Path) -> float:
    """Seconds for the sqlite3 shell (or Python's sqlite3 without it) to count the rows."""
    started = time.perf_counter()
    if shutil.which("sqlite3"):
        subprocess.run(
            ["sqlite3", str(journal), "SELECT count(*) FROM rows"],
            check=True,
            capture_output=True,
        )
    else:
        conn = sqlite3.connect(journal)
        conn.execute("SELECT count(*) FROM rows").fetchone()
        conn.close()
    return time.perf_counter() - started


def floor(journal: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", FLOOR, str(journal)], capture_output=True, text=True, check=True
    )
    result: dict[str, float] = json.loads(done.stdout)
    return result


def measure(csv_path: Path, keep: int) -> dict[str, object]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(csv_path), str(keep)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout)
    result["process"] = time.perf_counter() - started
    return result


def _median(results: list[dict[str, object]], name: str) -> float | None:
    values = [float(r[name]) for r in results if name in r]  # type: ignore[arg-type]
    return statistics.median(values) if values else None


def _step_median(results: list[dict[str, object]], name: str) -> float | None:
    values = [r["steps"].get(name) for r in results]  # type: ignore[attr-defined]
    found = [float(v) for v in values if v is not None]
    return statistics.median(found) if found else None


def _cell(value: float | None, base: float | None = None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if base is None else f"{value:.2f} ({value / base:.0f}×)"


def _run_rounds(args: argparse.Namespace, variants: dict[str, int]) -> dict[str, object]:
    """Build the journal, crash a job on a copy, then time every contender round by round
    on fresh copies of the crashed files."""
    base = Path(tempfile.mkdtemp(prefix="csvj-recover-", dir=os.environ.get("BENCH_DIR")))
    results: dict[str, list[dict[str, object]]] = {name: [] for name in variants}
    cli: list[float] = []
    floors: list[dict[str, float]] = []
    try:
        built = cached_journal(args.cache, args.rows, base)
        crashed = base / "crashed"
        csv_path = copy_journal_folder(built, crashed)
        job = crash_a_job(csv_path, args.workers, args.job_seconds, args.lease)
        files = {p.name: p.stat().st_size for p in crashed.iterdir() if p.is_file()}
        state = crashed_state(crashed, base / "work")
        time.sleep(max(0.0, args.lease + 0.5))  # let the dead workers' leases run out
        work = base / "work"
        jobs = ["cli", "floor", *variants]
        for round_no in range(args.rounds):
            shift = round_no % len(jobs)
            for name in jobs[shift:] + jobs[:shift]:
                _copy_files(crashed, work)
                if name == "cli":
                    cli.append(cli_count(work / f"{CSV_NAME}.journal"))
                elif name == "floor":
                    floors.append(floor(work / f"{CSV_NAME}.journal"))
                else:
                    results[name].append(measure(work / CSV_NAME, variants[name]))
            print(f"round {round_no + 1} of {args.rounds} done", file=sys.stderr)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return {
        "cli": cli,
        "floor": floors,
        "results": results,
        "job": job,
        "state": state,
        "files": files,
    }


def _print_table(results: dict[str, list[dict[str, object]]], cli_s: float) -> None:
    names = list(results)
    print(f"| seconds (× sqlite3 count) | {' | '.join(names)} |")
    print("|---|" + "---:|" * len(names))
    rows = [
        ("**open + recover() + pending()**", "total"),
        ("open()", "open"),
        ("recover()", "recover"),
        ("pending()", "pending"),
    ]
    for label, name in rows:
        cells = [_cell(_median(results[n], name), cli_s) for n in names]
        print(f"| {label} | {' | '.join(cells)} |")
    steps = list({s: None for rs in results.values() for r in rs for s in r["steps"]})  # type: ignore[attr-defined]
    order = {"open": 0, "recover": 1, "pending": 2, "close": 3}
    steps.sort(key=lambda s: order.get(s.split(":")[0], 9))
    for step in steps:
        cells = [_cell(_step_median(results[n], step)) for n in names]
        print(f"| &nbsp;&nbsp;{step} | {' | '.join(cells)} |")
    for label, name in (
        ("close()", "close"),
        ("import csvjournal", "import"),
        ("whole fresh process", "process"),
    ):
        cells = [_cell(_median(results[n], name)) for n in names]
        print(f"| {label} | {' | '.join(cells)} |")
    verdict = {n: _median(results[n], "total") for n in names}
    print(
        "target open + recover + pending <= 3 s: "
        + ", ".join(
            f"{n}: {'met' if (v or 0) <= TARGET_SECONDS else 'MISSED'}" for n, v in verdict.items()
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", type=Path, help="keep the built journal here for reruns")
    parser.add_argument("--workers", type=int, default=3, help="worker processes of the job")
    parser.add_argument("--job-seconds", type=float, default=10.0)
    parser.add_argument("--lease", type=float, default=5.0, help="the job's claim lease, s")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    args = parser.parse_args()
    quiet_logs()
    steal = Steal()
    variants = {"keep_backups=5 (default)": 5, "keep_backups=0": 0}
    run = _run_rounds(args, variants)
    results: dict[str, list[dict[str, object]]] = run["results"]  # type: ignore[assignment]
    floors: list[dict[str, float]] = run["floor"]  # type: ignore[assignment]
    files: dict[str, int] = run.pop("files")  # type: ignore[assignment]
    cli_s = statistics.median(run["cli"])  # type: ignore[arg-type]
    first = next(iter(results.values()))[0]
    print(
        f"{args.rows:,} rows; job of {args.workers} workers (claim(10) + record, lease"
        f" {args.lease:g} s) and an exporter, SIGKILLed {args.job_seconds:g} s after the"
        f" exporter was up; crashed files: "
        + ", ".join(f"{name} {size / 1e6:,.1f} MB" for name, size in sorted(files.items()))
    )
    print(
        f"crashed state: {run['state']}; after recovery: {first['pending_rows']:,} pending;"
        f" job: {run['job']}"
    )
    print(
        f"medians of {args.rounds} rounds, each on a fresh copy of the crashed files (warm"
        f" page cache); {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the"
        f" end; baseline `sqlite3 journal 'SELECT count(*) FROM rows'`: {cli_s:.3f} s"
    )
    _print_table(results, cli_s)
    print("| floor: Python sqlite3 alone on the same crashed copy, fresh process | seconds |")
    print("|---|---:|")
    for name in floors[0]:
        print(f"| {name} | {statistics.median(f[name] for f in floors):.2f} |")
    print(steal.report())
    if args.json:
        args.json.write_text(json.dumps(run, indent=2))


if __name__ == "__main__":
    main()
