"""Readers never see a truncated CSV while exporters are killed again and again (Linux only)."""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _readers import SEED
from _readers import check_csv_against_journal as _check_csv_against_journal
from _readers import integrity as _integrity
from _readers import prepare as _prepare
from _readers import temp_files as _temp_files
from _readers_procs import MAX_SECONDS, READY_TIMEOUT, WORKERS, Processes
from _readers_procs import check_readers as _check_readers
from _readers_procs import last_records as _last_records
from _readers_procs import start_readers as _start_readers
from _readers_procs import start_workers as _start_workers

import csvjournal

pytestmark = pytest.mark.slow

KILLS = 20  # exporters killed
TAKEOVER_TIMEOUT = 30.0  # seconds a standby may take to become the exporter after a kill


def _lock_holder(lock_file: Path) -> int | None:
    """The pid of the process holding the exporter lock (a POSIX record lock), per the
    kernel's /proc/locks; None when nobody holds it."""
    st = lock_file.stat()
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    entries = [
        int(fields[4])
        for fields in (line.split() for line in Path("/proc/locks").read_text().splitlines())
        if fields[1] == "POSIX" and fields[5] == device
    ]
    # By process: /proc/locks is not read in one piece, and a lock the kernel moves in its
    # list while the file is read shows twice (seen once: [11116, 11116]).
    holders = sorted(set(entries))
    assert len(holders) <= 1, f"the exporter lock is held by {entries}"
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
