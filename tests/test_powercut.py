"""Power cuts: with ``durability="full"`` a record or a claim that returned is never lost.

Each round a child process records (or claims, or backs up) as fast as it can and reports
every key once the call returned; it is killed with -9, and the folder is rebuilt from what
was synced (:mod:`_powercut`): each name as of its folder's last sync, each file's data as
of its own. That is what a power cut at that instant may leave. Reopened, the journal must
hold every reported key. The same harness shows ``durability="normal"`` losing records, so
it can tell.
"""

from __future__ import annotations

import csv
import io
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _children import READY_TIMEOUT, lines, script
from _cli import CONSOLE_SCRIPT
from _powercut import Disk, integrity

import csvjournal
from csvjournal.backup import check_backup, list_backups

pytestmark = pytest.mark.slow

_CHILD = """
import threading

csv_path, report_path, durability, threads, export, prefix, limit, mode = sys.argv[1:9]
journal = csvjournal.open(
    csv_path, durability=durability, export=export == "export", keep_backups=0
)
report = open(report_path, "a", buffering=1)
guard = threading.Lock()


def work(t):
    i = 0
    while not int(limit) or i < int(limit):
        if mode == "claim":
            keys = journal.claim(1, lease=3600)
            if not keys:
                break
            key = keys[0]
        elif mode == "backup":
            journal.record(f"{prefix}-{t}-{i}", "COMPLETED", N=i)
            key = str(journal.backup())
        else:
            key = f"{prefix}-{t}-{i}"
            journal.record(key, "COMPLETED", N=i)
        with guard:
            report.write(key + "\\n")  # only once the call returned
        i += 1


workers = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(int(threads))]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
report.write("done\\n")
time.sleep(3600)
"""


@pytest.fixture
def disk(tmp_path: Path, shim: Path) -> Disk:
    disk = Disk(tmp_path / "disk", shim)
    csvjournal.open(disk.root / "orders.csv", key="ID", keep_backups=0).close()
    return disk


def _run_and_cut(
    disk: Disk,
    tmp_path: Path,
    name: str,
    *,
    durability: str = "full",
    processes: int = 1,
    threads: int = 1,
    export: bool = False,
    after: int = 100,
    limit: int = 0,
    mode: str = "record",
) -> list[str]:
    """Run the children until they reported ``after`` keys (or all finished), kill them,
    cut the power; return every key reported, in order."""
    disk.settle()
    child = script(tmp_path, "powercut_child", _CHILD)
    reports = [tmp_path / f"{name}-{n}.txt" for n in range(processes)]
    procs = []
    for n, report in enumerate(reports):
        with (tmp_path / f"{name}-{n}.log").open("wb") as log:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(child),
                        str(disk.root / "orders.csv"),
                        str(report),
                        durability,
                        str(threads),
                        "export" if export and n == 0 else "quiet",
                        f"{name}-{n}",
                        str(limit),
                        mode,
                    ],
                    env=disk.env(),
                    stderr=log,
                )
            )
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            reported = [lines(report) for report in reports]
            if sum(map(len, reported)) >= after or all("done" in r for r in reported):
                break
            for n, proc in enumerate(procs):
                log_text = (tmp_path / f"{name}-{n}.log").read_text()
                assert proc.poll() is None, f"child ended early:\n{log_text}"
            assert time.monotonic() < deadline, "the children reported too little in time"
            time.sleep(0.005)
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()
    disk.cut()  # only now: the report files live outside the disk
    return [key for report in reports for key in lines(report) if key != "done"]


def _statuses(csv_path: Path, keys: list[str]) -> dict[str, str | None]:
    with csvjournal.open(csv_path, export=False) as journal:
        return {key: (row or {}).get("STATUS") for key in keys for row in [journal.get(key)]}


def test_every_record_that_returned_survives_a_power_cut(disk: Disk, tmp_path: Path) -> None:
    csv_path = disk.root / "orders.csv"
    everything: list[str] = []
    for round_no in range(3):
        reported = _run_and_cut(disk, tmp_path, f"r{round_no}", after=random.randint(20, 150))
        assert reported
        assert integrity(Path(f"{csv_path}.journal")) == "ok"
        everything += reported
        statuses = _statuses(csv_path, everything)
        assert [key for key, status in statuses.items() if status != "COMPLETED"] == []


def test_a_power_cut_loses_records_made_with_normal_durability(disk: Disk, tmp_path: Path) -> None:
    # The control: the same harness, commits that were never synced. Were nothing lost
    # here, the test above could not fail.
    csv_path = disk.root / "orders.csv"
    reported = _run_and_cut(disk, tmp_path, "normal", durability="normal", limit=40, after=40)
    assert len(reported) == 40
    assert integrity(Path(f"{csv_path}.journal")) == "ok"  # lost, but never corrupt
    statuses = _statuses(csv_path, reported)
    assert [key for key, status in statuses.items() if status is None] != []


def test_group_commits_and_the_exporter_survive_power_cuts(disk: Disk, tmp_path: Path) -> None:
    csv_path = disk.root / "orders.csv"
    everything: list[str] = []
    for round_no in range(3):
        reported = _run_and_cut(
            disk,
            tmp_path,
            f"g{round_no}",
            threads=8,
            export=True,
            after=random.randint(50, 400),
        )
        everything += reported
        # The CSV is an old export or a new one, whole either way
        text = csv_path.read_bytes().decode("utf-8")
        rows = list(csv.DictReader(io.StringIO(text, newline=""), strict=True))
        assert all(row["STATUS"] == "COMPLETED" for row in rows)
        assert integrity(Path(f"{csv_path}.journal")) == "ok"
        # ... and the journal knows it: no false alarm of a hand edit at the exporting open
        with csvjournal.open(csv_path, keep_backups=0) as journal:
            journal.flush(timeout=60)
        shown = {row["ID"]: row["STATUS"] for row in csv.DictReader(csv_path.open(newline=""))}
        assert [key for key in everything if shown.get(key) != "COMPLETED"] == []


def test_every_claim_that_returned_survives_a_power_cut(disk: Disk, tmp_path: Path) -> None:
    csv_path = disk.root / "orders.csv"
    with csvjournal.open(csv_path, export=False) as journal, journal.batch():
        for i in range(3000):
            journal.record(f"row-{i:05d}")
    for round_no in range(2):
        claimed = _run_and_cut(
            disk,
            tmp_path,
            f"c{round_no}",
            processes=2,
            threads=2,
            mode="claim",
            after=random.randint(50, 300),
        )
        assert len(claimed) == len(set(claimed))  # nobody got a row twice
        assert integrity(Path(f"{csv_path}.journal")) == "ok"
        statuses = _statuses(csv_path, claimed)
        assert [key for key, status in statuses.items() if status != "IN_PROGRESS"] == []


def test_every_backup_that_returned_is_whole_after_a_power_cut(disk: Disk, tmp_path: Path) -> None:
    csv_path = disk.root / "orders.csv"
    for round_no in range(2):
        taken = _run_and_cut(
            disk, tmp_path, f"b{round_no}", export=True, mode="backup", after=random.randint(3, 12)
        )
        assert taken
        found = list_backups(csv_path)
        returned = [Path(path) for path in taken]
        assert [path for path in found if path in returned] == returned  # none lost, in order
        # Others: the earlier round's, or one that was whole on disk as the power went but
        # never reported (its process was killed between the two): newer than every report.
        others = [path for path in found if path not in returned]
        assert all(path < returned[0] or path > returned[-1] for path in others)
        for backup in found:
            check_backup(backup, "orders.csv.journal")  # raises if the copy is damaged
            text = (backup / "orders.csv").read_bytes().decode("utf-8")
            assert text.startswith("ID,STATUS,LAST_PROCESSED")  # the CSV as it was, whole
            list(csv.reader(io.StringIO(text, newline=""), strict=True))
        with csvjournal.open(csv_path, export=False) as journal:
            assert journal.backups() == found


def test_the_first_backup_survives_a_power_cut(disk: Disk, tmp_path: Path) -> None:
    # No exporter syncs the CSV's folder meanwhile: the backup's own syncs (and the
    # journal's, when it made the folder of backups) must keep it.
    csv_path = disk.root / "orders.csv"
    assert not list_backups(csv_path)
    taken = _run_and_cut(disk, tmp_path, "first", mode="backup", limit=1, after=1)
    assert [Path(path) for path in taken] == list_backups(csv_path)


def test_a_run_cut_by_power_resumes_and_runs_no_finished_row_again(
    disk: Disk, tmp_path: Path
) -> None:
    # `csvjournal run` (its worker threads, its commands, its exporter) loses power midway.
    # Every row it logged as done (after its record returned) must stay done; run again, it
    # must finish every other row, running each once and no row the journal kept as done.
    # The commands log their keys outside the disk: what they did in the world survives.
    csv_path = disk.root / "orders.csv"
    rows = [f"{i:03d}" for i in range(120)]
    with csvjournal.open(csv_path, keep_backups=0) as journal, journal.batch():
        for key in rows:
            journal.record(key)
    ran = tmp_path / "ran.log"
    command = ["--", "sh", "-c", 'echo "$1" >> "$2"', "sh", "{ID}", str(ran)]
    run = ["run", str(csv_path), "--workers", "3", "--lease", "1", *command]
    disk.settle()
    err_path = tmp_path / "run.err"
    with err_path.open("wb") as err:
        job = subprocess.Popen(
            [str(CONSOLE_SCRIPT), "--log-json", "--debug", *run],
            env=disk.env(),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        target = random.randint(10, 60)
        while len(lines(ran)) < target:
            assert job.poll() is None, err_path.read_text()
            assert time.monotonic() < deadline, "the job ran too few commands in time"
            time.sleep(0.005)
    finally:
        job.kill()
        job.wait()
    before = lines(ran)
    while True:  # its commands run in sessions of their own, not killed: they end at once
        time.sleep(0.3)
        if lines(ran) == before:
            break
        before = lines(ran)
    disk.cut()
    assert integrity(Path(f"{csv_path}.journal")) == "ok"
    logged = [json.loads(line) for line in lines(err_path) if line.startswith("{")]
    done = {entry["key"] for entry in logged if entry["event"] == "run_row_done"}
    kept = {key for key, status in _statuses(csv_path, rows).items() if status == "COMPLETED"}
    assert done <= kept <= set(before)  # done stays done; done only if its command ran

    resumed = subprocess.run(
        [str(CONSOLE_SCRIPT), *run], capture_output=True, timeout=READY_TIMEOUT, check=False
    )
    assert resumed.returncode == 0, resumed.stderr.decode()
    again = lines(ran)[len(before) :]
    assert sorted(again) == sorted(set(rows) - kept)  # each unfinished row once, no done one
    assert set(_statuses(csv_path, rows).values()) == {"COMPLETED"}
    with csv_path.open(newline="", encoding="utf-8") as file:
        assert {row["ID"]: row["STATUS"] for row in csv.DictReader(file)} == dict.fromkeys(
            rows, "COMPLETED"
        )


_REUSER = """
csv_path = Path(sys.argv[1])
freed = csv_path.stat().st_ino
temp = csv_path.with_name("temp")
temp.write_text("new")
fd = os.open(temp, os.O_RDONLY)
os.fsync(fd)
os.close(fd)
temp.replace(csv_path)  # frees the old file's inode number; the folder is not synced
for attempt in range(100):  # (ext4 gives a freed number to the next file made)
    made = csv_path.with_name(f"other-{attempt}")
    made.write_text("another file")
    if made.stat().st_ino == freed:
        fd = os.open(made, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        print("reused")
        break
"""


def test_a_new_file_given_a_freed_inode_number_is_not_the_old_file_after_a_cut(
    tmp_path: Path, shim: Path
) -> None:
    # The harness itself: a name whose folder was last synced before a rename freed its
    # file shows that file after the cut, not the data of a new file that got its inode
    # number and was synced (an import's CSV once showed the session backup's SQLite
    # journal, a false hand edit).
    disk = Disk(tmp_path / "disk", shim)
    csv_path = disk.root / "orders.csv"
    csv_path.write_text("old")
    disk.settle()
    child = script(tmp_path, "reuser", _REUSER)
    done = subprocess.run(
        [sys.executable, str(child), str(csv_path)],
        env=disk.env(),
        capture_output=True,
        timeout=READY_TIMEOUT,
        check=True,
    )
    if b"reused" not in done.stdout:
        pytest.skip("this file system gave no new file the freed inode number")
    disk.cut()
    assert sorted(path.name for path in disk.root.iterdir()) == ["orders.csv"]
    assert csv_path.read_text() == "old"
