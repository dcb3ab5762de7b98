"""The processes of the readers tests: exporter, worker and reader scripts, and their reports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from _readers import ENCODING, HEADER, NOTES, ROWS, SEED, STATUSES, WORKER_STATUSES

WORKERS = 4
READERS = 2
READY_TIMEOUT = 90.0  # seconds a process may take to start and open the journal
STOP_TIMEOUT = 90.0  # seconds a process may take to stop once asked
MIN_PARSES = 5  # successful parses each reader must have made
MAX_SECONDS = 600.0  # every helper process stops by itself after this, whatever happens


# -- the helper processes ----------------------------------------------------------------

# Each script takes the path of a JSON config. Reports are written unbuffered, one line per
# event, so that the parent sees them at once and a killed process leaves whole lines.

EXPORTER = """\
import json, os, sys, time

import csvjournal

cfg = json.loads(open(sys.argv[1]).read())
journal = csvjournal.open(cfg["csv"], export=True)
exporter = journal._exporter
deadline = time.monotonic() + cfg["max_seconds"]
with open(cfg["report"], "wb", buffering=0) as report:
    report.write(b"ready\\n")
    leading = False
    while not os.path.exists(cfg["stop"]) and time.monotonic() < deadline:
        if exporter.leading != leading:
            leading = exporter.leading
            report.write(b"leading\\n" if leading else b"lost-lead\\n")
        time.sleep(0.01)
    journal.close()
    report.write(b"closed\\n")
"""

# Records random existing keys until the duration is over or the stop file appears; each
# line "<key> <seq> <status> <note index>" is written after record() returned.
WORKER = """\
import json, os, random, sys, time

import csvjournal

cfg = json.loads(open(sys.argv[1]).read())
notes, statuses, rows = cfg["notes"], cfg["statuses"], cfg["rows"]
rng = random.Random(cfg["seed"])
journal = csvjournal.open(cfg["csv"], export=False)
n = 0
with open(cfg["report"], "wb", buffering=0) as report:
    report.write(b"ready\\n")
    deadline = time.monotonic() + cfg["duration"]
    while time.monotonic() < deadline and not os.path.exists(cfg["stop"]):
        key = f"{rng.randrange(rows):07d}"
        status, note = rng.choice(statuses), rng.randrange(len(notes))
        seq = journal.record(key, status, NOTE=notes[note])
        report.write(f"{key} {seq} {status} {note}\\n".encode())
        n += 1
    journal.close()
    report.write(f"done {n}\\n".encode())
"""

# Parses the CSV until the stop file appears, alternately with the csv module and pandas;
# writes {"parses": {...}, "failures": [...], "versions": n} to its results file at the end
# and keeps a copy of the first few files it could not parse.
READER = """\
import csv, io, json, os, sys, time

import pandas as pd

cfg = json.loads(open(sys.argv[1]).read())
path, encoding, header, rows = cfg["csv"], cfg["encoding"], cfg["header"], cfg["rows"]
expected_ids = {f"{i:07d}" for i in range(rows)}
statuses = set(cfg["statuses"])
status_at = header.index("STATUS")


def check(seen_header, ids, seen_statuses):
    if seen_header != header:
        raise AssertionError(f"header {seen_header!r}")
    if len(ids) != rows:
        raise AssertionError(f"{len(ids)} data rows")
    unique = set(ids)
    if len(unique) != rows:
        raise AssertionError(f"{rows - len(unique)} duplicate IDs")
    if unique != expected_ids:
        raise AssertionError(f"unknown IDs, e.g. {sorted(unique - expected_ids)[:3]!r}")
    if not seen_statuses <= statuses:
        raise AssertionError(f"unknown statuses {sorted(seen_statuses - statuses)[:3]!r}")


def with_csv(raw):
    reader = csv.reader(io.TextIOWrapper(raw, encoding=encoding, newline=""), strict=True)
    seen_header = next(reader)
    ids, seen_statuses = [], set()
    for row in reader:
        if len(row) != len(header):
            raise AssertionError(f"record {reader.line_num}: {len(row)} fields")
        ids.append(row[0])
        seen_statuses.add(row[status_at])
    check(seen_header, ids, seen_statuses)


def with_pandas(raw):
    frame = pd.read_csv(raw, dtype=str, keep_default_na=False, encoding=encoding)
    if frame.isna().to_numpy().any():
        raise AssertionError("rows with missing fields")
    check(list(frame.columns), frame[header[0]].tolist(), set(frame["STATUS"]))


parses = {"csv": 0, "pandas": 0}
failures, versions, saved = [], set(), 0
deadline = time.monotonic() + cfg["max_seconds"]
with open(cfg["report"], "wb", buffering=0) as report:
    report.write(b"ready\\n")
    turn = 0
    while not os.path.exists(cfg["stop"]) and time.monotonic() < deadline:
        mode, parse = (("csv", with_csv), ("pandas", with_pandas))[turn % 2]
        turn += 1
        try:
            with open(path, "rb") as raw:
                fd = os.dup(raw.fileno())  # the file as opened, whatever replaces it later
                try:
                    st = os.fstat(fd)
                    try:
                        parse(raw)
                    except Exception:
                        if saved < 3:
                            saved += 1
                            data = os.pread(fd, st.st_size + (1 << 20), 0)
                            with open(f"{cfg['report']}.failed-{saved}.csv", "wb") as copy:
                                copy.write(data)
                        raise
                finally:
                    os.close(fd)
            versions.add((st.st_ino, st.st_mtime_ns, st.st_size))
            parses[mode] += 1
        except Exception as exc:
            failures.append(f"{mode} parse {turn}: {type(exc).__name__}: {exc}"[:2000])
result = {"parses": parses, "failures": failures, "versions": len(versions)}
with open(cfg["results"] + ".tmp", "w") as out:
    json.dump(result, out)
os.replace(cfg["results"] + ".tmp", cfg["results"])
"""


class Processes:
    """The helper processes of one test: started from scripts, always cleaned up."""

    def __init__(self, tmp_path: Path, csv_path: Path) -> None:
        self.tmp_path = tmp_path
        self.csv_path = csv_path
        self.stop_file = tmp_path / "stop"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.names: dict[int, str] = {}  # pid -> name
        for name, text in (("exporter", EXPORTER), ("worker", WORKER), ("reader", READER)):
            (tmp_path / f"{name}.py").write_text(text, encoding="utf-8")

    def start(self, kind: str, name: str, **extra: Any) -> subprocess.Popen[bytes]:
        config = {
            "csv": str(self.csv_path),
            "stop": str(self.stop_file),
            "report": str(self.report(name)),
            "max_seconds": MAX_SECONDS,
            **extra,
        }
        config_path = self.tmp_path / f"{name}.json"
        config_path.write_text(json.dumps(config), encoding="utf-8")
        with self.log(name).open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, str(self.tmp_path / f"{kind}.py"), str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        self.names[proc.pid] = name
        return proc

    def report(self, name: str) -> Path:
        return self.tmp_path / f"{name}.report"

    def log(self, name: str) -> Path:
        return self.tmp_path / f"{name}.log"

    def lines(self, name: str) -> list[str]:
        """The complete lines of a report; a last line without its newline is ignored."""
        path = self.report(name)
        if not path.exists():
            return []
        return path.read_bytes().decode().split("\n")[:-1]

    def check_alive(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is not None:
            name = self.names[proc.pid]
            log = self.log(name).read_text(errors="replace")
            pytest.fail(f"{name} ended early (exit {proc.returncode}):\n{log[-5000:]}")

    def wait_for_line(self, proc: subprocess.Popen[bytes], line: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while line not in self.lines(self.names[proc.pid]):
            self.check_alive(proc)
            assert time.monotonic() < deadline, f"{self.names[proc.pid]} never said {line!r}"
            time.sleep(0.01)

    def wait_ended(self, proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
        name = self.names[proc.pid]
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name} did not stop within {timeout} s")
        log = self.log(name).read_text(errors="replace")
        assert code == 0, f"{name} exited {code}:\n{log[-5000:]}"

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL a process that must still be running."""
        self.check_alive(proc)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL

    def cleanup(self) -> None:
        self.stop_file.touch()
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
        for proc in self.procs:
            proc.wait()


# -- starting and checking the helpers ----------------------------------------------------


def start_workers(
    procs: Processes, duration: float
) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    names = [f"worker-{n}" for n in range(WORKERS)]
    workers = [
        procs.start(
            "worker",
            name,
            seed=SEED + n,
            duration=duration,
            rows=ROWS,
            notes=NOTES,
            statuses=WORKER_STATUSES,
        )
        for n, name in enumerate(names)
    ]
    return workers, names


def start_readers(procs: Processes) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    names = [f"reader-{n}" for n in range(READERS)]
    readers = [
        procs.start(
            "reader",
            name,
            encoding=ENCODING,
            header=HEADER,
            rows=ROWS,
            statuses=STATUSES,
            results=str(procs.tmp_path / f"{name}.results.json"),
        )
        for name in names
    ]
    return readers, names


def last_records(procs: Processes, names: list[str]) -> tuple[dict[str, tuple[int, str, str]], int]:
    """{key: (seq, status, note)} of the newest record of each key over all workers, and
    the number of records; every worker must have finished ("done <n>")."""
    newest: dict[str, tuple[int, str, str]] = {}
    total = 0
    for name in names:
        lines = procs.lines(name)
        assert lines[0] == "ready"
        assert lines[-1].startswith("done "), f"{name} did not finish: {lines[-1:]}"
        records = lines[1:-1]
        assert len(records) == int(lines[-1].split()[1])
        total += len(records)
        for line in records:
            key, seq, status, note = line.split(" ")
            if key not in newest or int(seq) > newest[key][0]:
                newest[key] = (int(seq), status, NOTES[int(note)])
    return newest, total


def check_readers(procs: Processes, names: list[str]) -> list[int]:
    """Every reader parsed the CSV at least MIN_PARSES times and never failed; returns
    how many distinct versions of the file each saw."""
    versions = []
    for name in names:
        results = json.loads((procs.tmp_path / f"{name}.results.json").read_text())
        failed = sorted(p.name for p in procs.tmp_path.glob(f"{name}.report.failed-*"))
        assert results["failures"] == [], f"{name} (copies of the bad files: {failed})"
        parses = results["parses"]
        assert parses["csv"] + parses["pandas"] >= MIN_PARSES, f"{name}: only {parses}"
        assert min(parses.values()) >= 1, f"{name}: {parses}"
        versions.append(results["versions"])
    return versions
