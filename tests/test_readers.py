"""Readers of the exported CSV never see it truncated or unparsable: not while workers record
as fast as they can, and not while the exporter is killed with SIGKILL again and again.

Everything runs in real processes started from small scripts written into ``tmp_path``: one
or more exporting processes (``export=True``), workers (``export=False``) recording random
existing keys, and readers that parse the CSV in a tight loop, alternately with the ``csv``
module and with ``pandas.read_csv``. Each process reports through files of its own (the
library may log on stdout, which goes to a log file with stderr). The second test asks the
kernel (``/proc/locks``) which process holds the exporter lock, so it runs on Linux only.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

import csvjournal

pytestmark = pytest.mark.slow

ROWS = 50_000
KEY = "ID"
HEADER = [KEY, "STATUS", "LAST_PROCESSED", "SUPPLIER", "NOTE", "AMOUNT"]
ENCODING = "utf-8-sig"  # the CSV starts with a byte-order mark, which is kept
WORKER_STATUSES = ("COMPLETED", "FAILED", "NO_ATTACHMENTS")
STATUSES = ("PENDING", *WORKER_STATUSES)  # every status the CSV may show
# Values that need quoting (delimiter, quote, line breaks) or must stay text as written.
NOTES = (
    "plain",
    "with, a comma",
    'with "quotes", and a comma',
    "two\nlines",
    "windows\r\nline break",
    '"quoted only"',
    "ünïcödé ✓ — ok",
    "",
    "=1+2",
    " leading and trailing space ",
)
SUPPLIERS = ("ACME", "ACME, Inc.", 'The "Best" Co', "Müller GmbH", "multi\nline\nname", "")
AMOUNTS = ("00123", "NA", "1e5", "-12.50", "", "null", "3,14")

WORKERS = 4
READERS = 2
WORK_SECONDS = 20.0  # how long the workers of the first test record
KILLS = 20  # exporters killed in the second test
SEED = 20261201
READY_TIMEOUT = 90.0  # seconds a process may take to start and open the journal
TAKEOVER_TIMEOUT = 30.0  # seconds a standby may take to become the exporter after a kill
STOP_TIMEOUT = 90.0  # seconds a process may take to stop once asked
MIN_PARSES = 5  # successful parses each reader must have made
MAX_SECONDS = 600.0  # every helper process stops by itself after this, whatever happens


def _key(i: int) -> str:
    return f"{i:07d}"  # leading zeros: must stay text


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


# -- the CSV -----------------------------------------------------------------------------


def _write_csv(path: Path) -> None:
    """ROWS rows with values that need quoting; minimal quoting, one line terminator."""
    rng = random.Random(SEED)
    with path.open("w", encoding=ENCODING, newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HEADER)
        for i in range(ROWS):
            done = rng.random() < 0.1
            writer.writerow(
                [
                    _key(i),
                    "COMPLETED" if done else "PENDING",
                    "2024-01-02T03:04:05Z" if done else "",
                    rng.choice(SUPPLIERS),
                    rng.choice(NOTES),
                    rng.choice(AMOUNTS),
                ]
            )


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(encoding=ENCODING, newline="") as handle:
        records = list(csv.reader(handle, strict=True))
    return records[0], records[1:]


def _prepare(tmp_path: Path) -> Path:
    """A 50,000-row CSV imported into a new journal (opened and closed once)."""
    folder = tmp_path / "data"
    folder.mkdir()
    csv_path = folder / "orders.csv"
    _write_csv(csv_path)
    original = csv_path.read_bytes()
    csvjournal.open(csv_path, key=KEY).close()
    assert csv_path.read_bytes() == original  # the same bytes back: nothing recorded
    return csv_path


def _integrity(journal_path: Path) -> str:
    with closing(sqlite3.connect(journal_path)) as conn:
        return "\n".join(row[0] for row in conn.execute("PRAGMA integrity_check"))


def _temp_files(csv_path: Path) -> list[Path]:
    return sorted(csv_path.parent.glob(f".{csv_path.name}.csvjournal-*"))


# -- starting and checking the helpers ----------------------------------------------------


def _start_workers(
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


def _start_readers(procs: Processes) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
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


def _last_records(
    procs: Processes, names: list[str]
) -> tuple[dict[str, tuple[int, str, str]], int]:
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


def _check_readers(procs: Processes, names: list[str]) -> list[int]:
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


def _check_csv_against_journal(
    csv_path: Path, journal: csvjournal.Journal, newest: dict[str, tuple[int, str, str]]
) -> None:
    """The CSV shows exactly the journal, and the newest record of each key."""
    header, rows = _read_csv(csv_path)
    frame = journal.to_dataframe()
    assert header == list(frame.columns) == HEADER
    assert len(rows) == len(frame) == ROWS
    assert [row[0] for row in rows] == frame[KEY].tolist()
    assert [row[1] for row in rows] == frame["STATUS"].tolist()
    assert rows == frame.to_numpy().tolist()
    shown = {row[0]: row for row in rows}
    wrong = {
        key: (shown[key][1], shown[key][4], status, note)
        for key, (_, status, note) in newest.items()
        if (shown[key][1], shown[key][4]) != (status, note)
    }
    assert wrong == {}, "CSV rows that do not show their newest record"


# -- the tests ---------------------------------------------------------------------------


def test_readers_always_see_a_whole_csv_while_workers_record(tmp_path: Path) -> None:
    csv_path = _prepare(tmp_path)
    procs = Processes(tmp_path, csv_path)
    try:
        exporter = procs.start("exporter", "exporter-0")
        procs.wait_for_line(exporter, "leading", READY_TIMEOUT)
        readers, reader_names = _start_readers(procs)
        for reader in readers:
            procs.wait_for_line(reader, "ready", READY_TIMEOUT)
        workers, worker_names = _start_workers(procs, WORK_SECONDS)
        for worker in workers:
            procs.wait_for_line(worker, "ready", READY_TIMEOUT)
        for worker in workers:
            procs.wait_ended(worker, WORK_SECONDS + STOP_TIMEOUT)
        for reader in readers:
            procs.check_alive(reader)
        procs.check_alive(exporter)

        newest, total = _last_records(procs, worker_names)
        assert total >= WORKERS * 10, "the workers hardly recorded anything"
        with csvjournal.open(csv_path, export=False) as journal:
            journal.flush(timeout=30)  # through the exporter process
            _check_csv_against_journal(csv_path, journal, newest)

        procs.stop_file.touch()
        for proc in [*readers, exporter]:
            procs.wait_ended(proc)
        # The exporter led from start to end, and closed cleanly.
        assert procs.lines("exporter-0") == ["ready", "leading", "closed"]
        versions = _check_readers(procs, reader_names)
        assert all(n > 1 for n in versions), f"the readers saw {versions} versions of the CSV"
    finally:
        procs.cleanup()
    assert _integrity(Path(f"{csv_path}.journal")) == "ok"
    assert _temp_files(csv_path) == []


def _lock_holder(lock_file: Path) -> int | None:
    """The pid of the process holding the exporter lock (a POSIX record lock), per the
    kernel's /proc/locks; None when nobody holds it."""
    st = lock_file.stat()
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    holders = [
        int(fields[4])
        for fields in (line.split() for line in Path("/proc/locks").read_text().splitlines())
        if fields[1] == "POSIX" and fields[5] == device
    ]
    assert len(holders) <= 1, f"the exporter lock is held by {holders}"
    return holders[0] if holders else None


class Exporters:
    """The exporter-capable processes of the second test, and which of them exports."""

    def __init__(self, procs: Processes, watched: list[subprocess.Popen[bytes]]) -> None:
        self.procs = procs
        self.watched = watched  # workers and readers: they must not end meanwhile
        self.running: list[subprocess.Popen[bytes]] = []
        self.lock_file = Path(f"{procs.csv_path}.backups") / "exporter.lock"

    def start(self) -> None:
        self.running.append(self.procs.start("exporter", f"exporter-{len(self.procs.procs)}"))

    def _wait(self, find: Callable[[], subprocess.Popen[bytes] | None]) -> subprocess.Popen[bytes]:
        deadline = time.monotonic() + TAKEOVER_TIMEOUT
        while True:
            for proc in self.watched:
                self.procs.check_alive(proc)
            found = find()
            if found is not None:
                return found
            assert time.monotonic() < deadline, f"no exporter took over in {TAKEOVER_TIMEOUT} s"
            time.sleep(0.005)

    def leader(self) -> subprocess.Popen[bytes]:
        """The process that has taken over and exports (waits for one)."""

        def find() -> subprocess.Popen[bytes] | None:
            for proc in self.running:
                if self.procs.lines(self.procs.names[proc.pid])[-1:] == ["leading"]:
                    assert _lock_holder(self.lock_file) == proc.pid, "leads without the lock"
                    return proc
            return None

        return self._wait(find)

    def holder(self) -> subprocess.Popen[bytes]:
        """The process holding the exporter lock, maybe still taking over (waits for one)."""

        def find() -> subprocess.Popen[bytes] | None:
            pid = self.lock_file.exists() and _lock_holder(self.lock_file)
            if not pid:
                return None
            by_pid = {proc.pid: proc for proc in self.running}
            assert pid in by_pid, f"the exporter lock is held by {pid}, not an exporter"
            return by_pid[pid]

        return self._wait(find)

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        self.procs.kill(proc)
        self.running.remove(proc)


def test_readers_always_see_a_whole_csv_while_exporters_are_killed(tmp_path: Path) -> None:
    if not Path("/proc/locks").exists():
        pytest.skip("finds the exporter through /proc/locks (Linux)")
    csv_path = _prepare(tmp_path)
    procs = Processes(tmp_path, csv_path)
    rng = random.Random(SEED)
    try:
        readers, reader_names = _start_readers(procs)
        workers, worker_names = _start_workers(procs, MAX_SECONDS)  # until the stop file
        exporters = Exporters(procs, [*readers, *workers])
        exporters.start()
        exporters.start()
        for proc in [*exporters.running, *readers, *workers]:
            procs.wait_for_line(proc, "ready", READY_TIMEOUT)

        takeovers: list[float] = []  # seconds from a kill to the next export by a standby
        mid_write = mid_takeover = 0
        killed_at = time.monotonic()
        for kill in range(KILLS):
            if kill % 3 == 0:
                # Kill an exporter that has taken over, preferably while it writes the CSV
                # (between creating its temp file and renaming it). Taking over renders all
                # 50,000 rows: several seconds on two loaded cores, hence one kill in three.
                victim = exporters.leader()
                takeovers.append(time.monotonic() - killed_at)
                time.sleep(rng.uniform(0.1, 0.4))
                deadline = time.monotonic() + 1.0
                while not _temp_files(csv_path) and time.monotonic() < deadline:
                    time.sleep(0.001)
                mid_write += bool(_temp_files(csv_path))
            else:
                # Kill whoever holds the lock now: most often a standby still taking over.
                time.sleep(rng.uniform(0.5, 1.0))
                victim = exporters.holder()
                mid_takeover += "leading" not in procs.lines(procs.names[victim.pid])
            exporters.kill(victim)
            killed_at = time.monotonic()
            exporters.start()  # keep a standby available
        exporters.leader()  # one more takeover after the last kill
        takeovers = [*takeovers[1:], time.monotonic() - killed_at]  # the first had no kill
        print(
            f"\ntakeovers: {', '.join(f'{t:.1f}' for t in takeovers)} s;"
            f" kills mid-write {mid_write}, mid-takeover {mid_takeover}"
        )

        for proc in list(exporters.running):  # the last ones die too
            exporters.kill(proc)
        procs.stop_file.touch()  # the workers and readers stop
        for proc in [*workers, *readers]:
            procs.wait_ended(proc)

        newest, total = _last_records(procs, worker_names)
        assert total >= WORKERS * 10, "the workers hardly recorded anything"
        versions = _check_readers(procs, reader_names)
        assert all(n > 1 for n in versions), f"the readers saw {versions} versions of the CSV"
    finally:
        procs.cleanup()

    with csvjournal.open(csv_path, export=True) as journal:
        journal.flush(timeout=30)
        _check_csv_against_journal(csv_path, journal, newest)
    assert _integrity(Path(f"{csv_path}.journal")) == "ok"
    assert _temp_files(csv_path) == []
    assert sorted(p.name for p in csv_path.parent.iterdir()) == [
        "orders.csv",
        "orders.csv.backups",
        "orders.csv.journal",
    ]
