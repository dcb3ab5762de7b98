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
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pytest
from _children import READY_TIMEOUT, lines, script
from _powercut import Disk, build_shim

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


@pytest.fixture(scope="session")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    built = build_shim(tmp_path_factory.mktemp("powercut"))
    if built is None:
        pytest.skip("simulating a power cut preloads a shim: it needs Linux and a C compiler")
    return built


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


def _integrity(journal_path: Path) -> str:
    with closing(sqlite3.connect(journal_path)) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def _statuses(csv_path: Path, keys: list[str]) -> dict[str, str | None]:
    with csvjournal.open(csv_path, export=False) as journal:
        return {key: (row or {}).get("STATUS") for key in keys for row in [journal.get(key)]}


def test_every_record_that_returned_survives_a_power_cut(disk: Disk, tmp_path: Path) -> None:
    csv_path = disk.root / "orders.csv"
    everything: list[str] = []
    for round_no in range(3):
        reported = _run_and_cut(disk, tmp_path, f"r{round_no}", after=random.randint(20, 150))
        assert reported
        assert _integrity(Path(f"{csv_path}.journal")) == "ok"
        everything += reported
        statuses = _statuses(csv_path, everything)
        assert [key for key, status in statuses.items() if status != "COMPLETED"] == []


def test_a_power_cut_loses_records_made_with_normal_durability(disk: Disk, tmp_path: Path) -> None:
    # The control: the same harness, commits that were never synced. Were nothing lost
    # here, the test above could not fail.
    csv_path = disk.root / "orders.csv"
    reported = _run_and_cut(disk, tmp_path, "normal", durability="normal", limit=40, after=40)
    assert len(reported) == 40
    assert _integrity(Path(f"{csv_path}.journal")) == "ok"  # lost, but never corrupt
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
        assert _integrity(Path(f"{csv_path}.journal")) == "ok"
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
        assert _integrity(Path(f"{csv_path}.journal")) == "ok"
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
        assert [Path(path) for path in taken] == found[-len(taken) :]  # none lost, in order
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


def _cut_after_every_sync(
    tmp_path: Path,
    shim: Path,
    child: Path,
    prepare: Callable[[Disk], list[str]],
    check: Callable[[Disk], None],
) -> int:
    """Run ``child`` (with the arguments ``prepare`` returns, having set up a fresh disk)
    once whole to count its syncs, then once per sync, cutting the power right after it,
    and ``check`` the disk each time: every state a power cut can leave. Return the count.
    """

    def run(folder: Path, kill_at: int | None) -> tuple[Disk, int]:
        disk = Disk(folder / "disk", shim)
        argv = prepare(disk)
        disk.settle()
        tally = folder / "tally"
        done = subprocess.run(
            [sys.executable, str(child), *argv],
            env=disk.env(kill_at=kill_at, tally=tally),
            capture_output=True,
            timeout=READY_TIMEOUT,
            check=False,
        )
        # Background threads make the count differ a little from run to run: a run may
        # end before its ``kill_at``-th sync.
        expected = (0,) if kill_at is None else (0, -signal.SIGKILL)
        assert done.returncode in expected, done.stderr.decode()
        return disk, tally.stat().st_size if tally.exists() else 0

    def cut_after(n: int) -> None:
        disk, _ = run(tmp_path / f"cut{n}", n)
        disk.cut()
        check(disk)

    _, syncs = run(tmp_path / "whole", None)
    assert syncs > 0
    with ThreadPoolExecutor(2) as pool:  # two cuts at a time: the children mostly start up
        for done in pool.map(cut_after, range(1, syncs + 1)):
            assert done is None
    return syncs


_RESTORER = """
csv_path, backup = sys.argv[1:3]
csvjournal.restore(csv_path, backup, keep_backups=0)
"""


def _keys(journal_path: Path) -> set[str]:
    with closing(sqlite3.connect(journal_path)) as conn:
        return {key for (key,) in conn.execute("SELECT key FROM rows")}


def test_a_power_cut_at_any_point_of_a_restore_leaves_one_journal_or_the_other(
    tmp_path: Path, shim: Path
) -> None:
    old = {f"old-{i}" for i in range(20)}
    new = old | {f"new-{i}" for i in range(20)}

    def prepare(disk: Disk) -> list[str]:
        csv_path = disk.root / "orders.csv"
        with csvjournal.open(csv_path, key="ID", keep_backups=0) as journal:
            for key in sorted(old):
                journal.record(key, "COMPLETED")
            backup = journal.backup()
            for key in sorted(new - old):
                journal.record(key, "COMPLETED")
        return [str(csv_path), str(backup)]

    def check(disk: Disk) -> None:
        csv_path = disk.root / "orders.csv"
        journal_path = Path(f"{csv_path}.journal")
        assert _integrity(journal_path) == "ok"
        found = _keys(journal_path)
        assert found in (new, old)
        if found == old:  # restored: the journal it replaced is in a backup, whole
            assert new in [_keys(b / "orders.csv.journal") for b in list_backups(csv_path)]
        with csvjournal.open(csv_path, keep_backups=0) as journal:  # no hand-edit alarm
            journal.flush(timeout=60)
        assert {row["ID"] for row in csv.DictReader(csv_path.open(newline=""))} == found

    child = script(tmp_path, "restorer", _RESTORER)
    assert _cut_after_every_sync(tmp_path, shim, child, prepare, check) > 3


_OPENER = """
csvjournal.open(sys.argv[1]).close()  # upgrades the journal's schema, after a backup
"""


def _revision(journal_path: Path) -> str:
    with closing(sqlite3.connect(journal_path)) as conn:
        return str(conn.execute("SELECT version_num FROM alembic_version").fetchone()[0])


def test_a_power_cut_at_any_point_of_a_schema_upgrade_loses_nothing(
    tmp_path: Path, shim: Path
) -> None:
    fixture = Path(__file__).parent / "fixtures" / "journal-0001.sqlite"

    def prepare(disk: Disk) -> list[str]:
        csv_path = disk.root / "orders.csv"
        Path(f"{csv_path}.journal").write_bytes(fixture.read_bytes())
        return [str(csv_path)]

    def check(disk: Disk) -> None:
        csv_path = disk.root / "orders.csv"
        journal_path = Path(f"{csv_path}.journal")
        assert _integrity(journal_path) == "ok"
        if _revision(journal_path) != "0001":  # upgraded: the old journal is backed up
            assert "0001" in {_revision(b / "orders.csv.journal") for b in list_backups(csv_path)}
        with csvjournal.open(csv_path, keep_backups=0) as journal:  # finishes the upgrade
            assert journal.get("PO-1")["SUPPLIER"] == 'Müller; "GmbH"'  # type: ignore[index]
            assert [e.status for e in journal.history("PO-2")] == ["FAILED", "NO_ATTACHMENTS"]
            assert journal.pending() == ["PO-3"]
        assert _revision(journal_path) != "0001"

    child = script(tmp_path, "opener", _OPENER)
    assert _cut_after_every_sync(tmp_path, shim, child, prepare, check) > 3


_IMPORTER = """
csvjournal.open(sys.argv[1], key="ID").close()  # imports the CSV into a new journal
"""


def test_a_power_cut_at_any_point_of_an_import_leaves_a_csv_to_import_again(
    tmp_path: Path, shim: Path
) -> None:
    def prepare(disk: Disk) -> list[str]:
        csv_path = disk.root / "orders.csv"
        csv_path.write_text("ID,NAME\n" + "".join(f"k{i},name {i}\n" for i in range(50)))
        return [str(csv_path)]

    def check(disk: Disk) -> None:
        csv_path = disk.root / "orders.csv"
        with csvjournal.open(csv_path, key="ID", keep_backups=0) as journal:
            assert len(journal) == 50
            assert journal.get("k7")["NAME"] == "name 7"  # type: ignore[index]
            assert journal.pending()[:2] == ["k0", "k1"]

    child = script(tmp_path, "importer", _IMPORTER)
    assert _cut_after_every_sync(tmp_path, shim, child, prepare, check) > 3


_MERGER = """
csvjournal.merge_csv(sys.argv[1])  # brings the hand edits of the CSV into the journal
"""


def test_a_power_cut_at_any_point_of_a_merge_is_undone_by_merging_again(
    tmp_path: Path, shim: Path
) -> None:
    def prepare(disk: Disk) -> list[str]:
        csv_path = disk.root / "orders.csv"
        csv_path.write_text("ID,NAME\n" + "".join(f"k{i},name {i}\n" for i in range(30)))
        with csvjournal.open(csv_path, key="ID", keep_backups=0) as journal:
            journal.record("k1", "COMPLETED")
        text = csv_path.read_text().replace("k2,name 2,", "k2,renamed,") + "added,new row,,\n"
        csv_path.write_text(text)  # edited by hand
        return [str(csv_path)]

    def check(disk: Disk) -> None:
        csv_path = disk.root / "orders.csv"
        assert _integrity(Path(f"{csv_path}.journal")) == "ok"
        csvjournal.merge_csv(csv_path)  # what a user does after the crash: merge again
        with csvjournal.open(csv_path, keep_backups=0) as journal:  # no hand-edit alarm
            assert len(journal) == 31
            assert journal.get("k2")["NAME"] == "renamed"  # type: ignore[index]
            assert journal.get("added")["NAME"] == "new row"  # type: ignore[index]
            assert journal.get("k1")["STATUS"] == "COMPLETED"  # type: ignore[index]

    child = script(tmp_path, "merger", _MERGER)
    assert _cut_after_every_sync(tmp_path, shim, child, prepare, check) > 1
