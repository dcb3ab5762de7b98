"""The single exporter: flush, takeover, pacing, export elsewhere, permissions, hand edits."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _exporter import exported_rows as _rows
from click.testing import CliRunner
from structlog.testing import capture_logs

import csvjournal
import csvjournal._pids
from csvjournal._oslock import exporter_pid
from csvjournal.cli import cli
from csvjournal.csvio import temp_prefix
from csvjournal.progress import progress


def test_flush_returns_once_the_csv_shows_every_record(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        for i in range(50):
            journal.record(f"k{i}", "COMPLETED", N=i)
        journal.flush(timeout=10)
        rows = _rows(csv_path)
        assert len(rows) == 50
        assert rows["k49"]["N"] == "49"
        assert rows["k49"]["STATUS"] == "COMPLETED"


def test_closing_the_exporter_writes_the_last_records(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("last", "COMPLETED")
    assert _rows(csv_path)["last"]["STATUS"] == "COMPLETED"


def test_a_non_exporting_handle_flushes_through_the_exporter(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID") as exporter:
        with csvjournal.open(csv_path, export=False) as worker:
            worker.record("w", "COMPLETED")
            worker.flush(timeout=10)
            assert "w" in _rows(csv_path)
        assert exporter.get("w") is not None


def test_with_no_exporter_alive_flush_exports_itself(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID", export=False) as journal:
        journal.record("a", "COMPLETED")
        assert not csv_path.exists()
        journal.flush(timeout=10)
        assert _rows(csv_path)["a"]["STATUS"] == "COMPLETED"
        journal.export()
        assert "a" in _rows(csv_path)


def test_one_exporter_at_a_time_and_a_standby_takes_over(csv_path: Path) -> None:
    first = csvjournal.open(csv_path, key="ID")
    second = csvjournal.open(csv_path)
    try:
        assert first._exporter is not None
        assert first._exporter.leading
        assert second._exporter is not None
        assert not second._exporter.leading
        first.close()
        deadline = time.monotonic() + 3
        while not second._exporter.leading and time.monotonic() < deadline:
            time.sleep(0.05)
        assert second._exporter.leading  # took over within about a second
        second.record("after", "COMPLETED")
        second.flush(timeout=10)
        assert "after" in _rows(csv_path)
    finally:
        first.close()
        second.close()


_OTHER_EXPORTER = """\
import sys, time
import csvjournal
journal = csvjournal.open(sys.argv[1])
time.sleep(1.0)
print("leading" if journal._exporter.leading else "standing by", flush=True)
journal.close()
"""

_LOCK_HOLDER = """\
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.lockf(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_backups_folder_deleted_by_hand_is_made_again_by_the_exporter(csv_path: Path) -> None:
    # The exporter lock lives in orders.csv.backups/: deleted with the folder, the next
    # exporting process would lock a new file while the exporter exported on.
    with csvjournal.open(csv_path, key="ID") as journal:
        assert journal._exporter is not None
        journal.backups()  # the session's backup, taken in the background, is done
        shutil.rmtree(f"{csv_path}.backups")
        time.sleep(1.0)  # it looks every half second
        assert Path(f"{csv_path}.backups", "exporter.lock").exists()
        done = subprocess.run(
            [sys.executable, "-c", _OTHER_EXPORTER, str(csv_path)],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        assert done.stdout.splitlines()[-1] == "standing by"
        assert journal._exporter.leading


def test_an_exporter_whose_lock_file_another_process_locked_anew_steps_down(
    csv_path: Path, tmp_path: Path
) -> None:
    folder = Path(f"{csv_path}.backups")
    with csvjournal.open(csv_path, key="ID") as journal:
        assert journal._exporter is not None
        journal.record("a")
        journal.backups()  # the session's backup, taken in the background, is done
        ready = tmp_path / "ready"
        ready.mkdir()
        holder = subprocess.Popen(
            [sys.executable, "-c", _LOCK_HOLDER, str(ready / "exporter.lock")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == "locked\n"
            folder.rename(tmp_path / "deleted")  # the folder deleted by hand, and at once
            ready.rename(folder)  # another process's lock in its place
            deadline = time.monotonic() + 5
            while journal._exporter.leading and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not journal._exporter.leading
        finally:
            holder.communicate("")  # the holder exits: its lock is free
        journal.record("b", "COMPLETED")
        journal.flush(timeout=30)
        deadline = time.monotonic() + 5
        while not journal._exporter.leading and time.monotonic() < deadline:
            time.sleep(0.05)
        assert journal._exporter.leading  # it stood by, and leads again
    assert _rows(csv_path)["b"]["STATUS"] == "COMPLETED"


_FROZEN_EXPORTER = """\
import sys, time
import structlog
import csvjournal
# logs away from stdout: a log line of the exporter thread could split "up" from its newline
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
journal = csvjournal.open(sys.argv[1], key="ID")
print("up", flush=True)
time.sleep(120)
"""


def _start_frozen_exporter(csv_path: Path) -> subprocess.Popen[str]:
    """A process that exports ``csv_path``'s journal and does nothing else, once it is up."""
    exporter = subprocess.Popen(
        [sys.executable, "-c", _FROZEN_EXPORTER, str(csv_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert exporter.stdout is not None
    assert exporter.stdout.readline() == "up\n"
    return exporter


def test_a_standby_outlives_a_deleted_backups_folder_and_takes_over(csv_path: Path) -> None:
    exporter = _start_frozen_exporter(csv_path)
    try:
        with csvjournal.open(csv_path) as standby:
            assert standby._exporter is not None
            assert not standby._exporter.leading
            standby.backups()
            exporter.send_signal(signal.SIGSTOP)  # it cannot make the folder again first
            shutil.rmtree(f"{csv_path}.backups")
            exporter.kill()
            exporter.wait()
            deadline = time.monotonic() + 5
            while not standby._exporter.leading and time.monotonic() < deadline:
                time.sleep(0.05)
            assert standby._exporter.leading  # its thread lived on, and took over
            standby.record("after", "COMPLETED")
            time.sleep(1.0)  # no flush(): the exporter thread writes it
            assert _rows(csv_path)["after"]["STATUS"] == "COMPLETED"
    finally:
        exporter.kill()
        exporter.wait()


def test_closing_a_standby_handle_waits_until_the_exporter_shows_its_records(
    csv_path: Path,
) -> None:
    with csvjournal.open(csv_path, key="ID") as exporter:
        standby = csvjournal.open(csv_path)
        assert standby._exporter is not None
        assert not standby._exporter.leading
        with standby.batch():
            for i in range(200):
                standby.record(f"s{i}", "COMPLETED", N=i)
        standby.close()  # the spec: leaving the block waits until the CSV shows every record
        rows = _rows(csv_path)
        assert len(rows) == 200
        assert rows["s199"]["N"] == "199"
        assert exporter._exporter is not None
        assert exporter._exporter.leading


def test_a_standby_handle_closing_after_the_exporter_left_exports_its_records(
    csv_path: Path,
) -> None:
    first = csvjournal.open(csv_path, key="ID")
    second = csvjournal.open(csv_path)
    first.record("a", "COMPLETED")
    first.close()
    # At once: the standby would take over only at its next look, up to 0.5 s later.
    second.record("b", "COMPLETED")
    second.close()
    rows = _rows(csv_path)
    assert (rows["a"]["STATUS"], rows["b"]["STATUS"]) == ("COMPLETED", "COMPLETED")
    before = csv_path.read_bytes()
    with csvjournal.open(csv_path) as again:  # nothing left to catch up: the file stays
        assert again.get("b") is not None
    assert csv_path.read_bytes() == before


def test_under_a_stream_of_commits_a_small_csv_is_exported_at_most_every_50_ms(
    csv_path: Path,
) -> None:
    with csvjournal.open(csv_path, key="ID", durability="normal") as journal:
        exporter = journal._exporter
        assert exporter is not None
        journal.flush(timeout=10)
        before = exporter.exports
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < 2.0:  # thousands of commits, none waiting
            journal.record(f"k{n % 50}", "COMPLETED", N=n)
            n += 1
        exports = exporter.exports - before
        assert 2 <= exports <= 2.0 / 0.05 + 1  # it kept up, and no more often than that
        journal.flush(timeout=10)
    assert _rows(csv_path)[f"k{(n - 1) % 50}"]["N"] == str(n - 1)


def test_after_a_quiet_spell_the_exporter_still_notices_a_commit_by_itself(
    csv_path: Path,
) -> None:
    # A quiet exporter polls less often; a commit must still reach the CSV without flush().
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("early", "COMPLETED")
        journal.flush(timeout=10)
        time.sleep(1.5)  # longer than the exporter's quiet threshold
        with csvjournal.open(csv_path, export=False) as other:
            other.record("late", "COMPLETED")
        deadline = time.monotonic() + 10
        while "late" not in _rows(csv_path) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _rows(csv_path)["late"]["STATUS"] == "COMPLETED"


def test_export_to_another_path_leaves_the_csv_alone(csv_path: Path, tmp_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a", "COMPLETED")
        journal.flush(timeout=10)
        before = csv_path.read_bytes()
        journal.record("b", "FAILED")
        journal.export(tmp_path / "copy.csv")
        assert set(_rows(tmp_path / "copy.csv")) == {"a", "b"}
        assert csv_path.read_bytes() == before or "b" in _rows(csv_path)
    with pytest.raises(csvjournal.ExportError), csvjournal.open(csv_path) as journal:
        journal.export(tmp_path / "no-such-folder" / "x.csv")


KILLED_MID_COPY = """\
import os, sys
from pathlib import Path
from csvjournal._atomicfile import atomic_write

def chunks():
    yield b"ID,STATUS\\n" * 1000
    os.kill(os.getpid(), 9)  # mid-write, the temporary file half written

atomic_write(Path(sys.argv[1]), chunks())
"""


def test_a_copy_killed_mid_write_is_cleaned_up_by_the_next_copy_to_that_folder(
    csv_path: Path, tmp_path: Path
) -> None:
    # A killed `export --to copies/a.csv` left its hidden temporary file (as big as the
    # CSV) for good: only a copy to that very name removed it.
    copies = tmp_path / "copies"
    copies.mkdir()
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_MID_COPY, str(copies / "a.csv")], check=False, timeout=60
    )
    assert killed.returncode == -signal.SIGKILL
    (leftover,) = copies.glob(".a.csv.csvjournal-*")
    live = copies / f"{temp_prefix(copies / 'b.csv')}{csvjournal._pids.owner_tag()}-abcd1234"
    live.write_text("being written")  # by a live process (this one): left alone
    users = [copies / name for name in (".notes.csvjournal-backup", ".x.csvjournal-12345-keep")]
    for own in users:
        own.write_text("a user's own file, named like ours")
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a", "COMPLETED")
        journal.export(copies / "other.csv")
    assert not leftover.exists()
    assert live.exists()
    assert sorted(p.name for p in copies.iterdir()) == sorted(
        [live.name, "other.csv", *(own.name for own in users)]
    )


def test_permissions_of_the_old_csv_are_kept(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a")
    assert stat.S_IMODE(csv_path.stat().st_mode) == 0o666 & ~_umask()
    csv_path.chmod(0o640)
    with csvjournal.open(csv_path) as journal:
        journal.record("b")
    assert stat.S_IMODE(csv_path.stat().st_mode) == 0o640


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_leftover_temp_files_are_removed_at_the_next_open(csv_path: Path) -> None:
    csvjournal.open(csv_path, key="ID").close()
    leftover = csv_path.parent / f"{temp_prefix(csv_path)}abc123"
    leftover.write_bytes(b"half an export")
    with csvjournal.open(csv_path):
        assert not leftover.exists()
    assert sorted(p.name for p in csv_path.parent.iterdir()) == [
        "orders.csv",
        "orders.csv.backups",
        "orders.csv.journal",
    ]


def test_a_hand_edit_is_refused_at_open_with_what_to_do(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a", "COMPLETED")
    edited = csv_path.read_bytes().replace(b"COMPLETED", b"DONE BY HAND")
    csv_path.write_bytes(edited)
    with pytest.raises(csvjournal.CsvChangedError, match="import --merge") as caught:
        csvjournal.open(csv_path)
    assert isinstance(caught.value, ValueError)
    assert csv_path.read_bytes() == edited  # nothing overwritten
    with csvjournal.open(csv_path, export=False) as worker:  # workers may still record
        worker.record("b")
    csv_path.unlink()  # deleting the CSV is the other way out: it is written anew
    with csvjournal.open(csv_path) as journal:
        journal.flush(timeout=10)
    assert set(_rows(csv_path)) == {"a", "b"}


def test_export_to_a_missing_folder_names_the_folder(csv_path: Path, tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "copy.csv"
    with (
        csvjournal.open(csv_path, key="ID") as journal,
        pytest.raises(csvjournal.ExportError) as caught,
    ):
        journal.export(target)
    assert str(caught.value) == f"{target}: could not write the CSV: no folder {target.parent}"
    assert not (tmp_path / "no").exists()


def test_export_to_a_folder_that_takes_no_file_says_why_without_a_temp_name(
    csv_path: Path,
) -> None:
    target = Path("/proc/copy.csv")  # a folder no one may create a file in, not even root
    with (
        csvjournal.open(csv_path, key="ID") as journal,
        pytest.raises(csvjournal.ExportError) as caught,
    ):
        journal.export(target)
    assert str(caught.value).startswith(f"{target}: could not write the CSV: ")
    assert ".csvjournal-" not in str(caught.value)  # the hidden file, gone, means nothing


@pytest.mark.parametrize("kind", ["fifo", "folder", "symlink loop"])
def test_export_to_a_path_that_is_no_regular_file_leaves_it_as_it_is(
    journal: csvjournal.Journal, tmp_path: Path, kind: str
) -> None:
    target = tmp_path / "copy.csv"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "folder":
        target.mkdir()
    else:
        target.symlink_to("loop.csv")
        (tmp_path / "loop.csv").symlink_to("copy.csv")
    why = "could not write the CSV" if kind == "symlink loop" else "not a regular file"
    with pytest.raises(csvjournal.ExportError, match=rf"copy\.csv: {why}"):
        journal.export(target)
    left_as_it_is = {
        "fifo": target.is_fifo,
        "folder": target.is_dir,
        "symlink loop": target.is_symlink,
    }
    assert left_as_it_is[kind]()


@pytest.mark.parametrize(
    "name",
    [
        "orders.csv",
        "orders.csv.journal",
        "orders.csv.journal-wal",
        "orders.csv.journal-shm",
        "orders.csv.backups",
        "orders.csv.backups/copy.csv",
    ],
)
def test_export_to_a_path_never_writes_over_the_journals_own_files(
    journal: csvjournal.Journal, csv_path: Path, name: str
) -> None:
    journal.record("PO-1", "COMPLETED")
    journal.flush(timeout=30)
    target = csv_path.parent / name
    existed = target.exists()
    with pytest.raises(csvjournal.SettingsError, match="one of the journal's own files"):
        journal.export(target)
    assert target.exists() == existed
    journal.close()
    with csvjournal.open(csv_path) as again:  # the journal is whole
        assert again.get("PO-1") is not None


_LOCK_SEEN = """
import sys, pathlib
from csvjournal._oslock import exporter_alive
print(exporter_alive(pathlib.Path(sys.argv[1])))
"""


def _lock_seen_elsewhere(csv_path: Path) -> bool:
    done = subprocess.run(
        [sys.executable, "-c", _LOCK_SEEN, str(csv_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip().splitlines()[-1] == "True"


def test_a_second_handles_flush_and_recover_keep_the_processs_exporter_lock(
    csv_path: Path,
) -> None:
    # POSIX locks are the process's: a descriptor of the lock file closed anywhere in it
    # drops its lock, and another process would export beside this one
    with csvjournal.open(csv_path, key="ID") as exporting:
        assert exporting._exporter is not None
        assert exporting._exporter.leading
        assert exporter_pid(csv_path) == os.getpid()
        with csvjournal.open(csv_path, export=False) as second:
            for n in range(20):
                second.record(f"k{n}")
                second.flush(timeout=5)
            second.recover()
        assert _lock_seen_elsewhere(csv_path)


def test_an_export_to_another_jobs_csv_is_refused(csv_path: Path) -> None:
    other = csv_path.with_name("other.csv")
    other.write_text("ID\nx\n")
    csvjournal.open(other, key="ID").close()
    sheet = other.read_bytes()
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a")
        with pytest.raises(csvjournal.SettingsError, match="the CSV of another job"):
            journal.export(other)
    assert other.read_bytes() == sheet


@pytest.mark.parametrize(
    ("target", "said"),
    [
        ("other.csv.journal", "an SQLite database"),
        ("other.csv.journal-wal", "a file of another job's journal"),
        ("link.csv", "the CSV of another job"),  # a symlink to it
        ("other.csv.backups/exporter.lock", "in the backups folder of another job"),
        ("copy.db", "an SQLite database"),  # a backup copied elsewhere
    ],
)
def test_an_export_over_another_jobs_files_is_refused(
    csv_path: Path, target: str, said: str
) -> None:
    other = csv_path.with_name("other.csv")
    other.write_text("X\nx\n")
    with csvjournal.open(other, key="X") as live:  # its WAL is there while it is open
        live.record("x", "COMPLETED")
        live.flush()
        (csv_path.parent / "link.csv").symlink_to(other)
        shutil.copy(f"{other}.journal", csv_path.parent / "copy.db")
        path = (csv_path.parent / target).resolve()
        before = path.stat().st_ino
        with csvjournal.open(csv_path, key="ID") as journal:
            journal.record("a")
            with pytest.raises(csvjournal.SettingsError, match=said):
                journal.export(csv_path.parent / target)
        assert path.stat().st_ino == before  # not replaced (a copy is written by a rename)
        assert not path.read_bytes().startswith(b"ID,")
        live.record("y", "COMPLETED")  # the other job goes on
    with csvjournal.open(other) as reopened:
        assert reopened.counts() == {"COMPLETED": 2}


def test_an_export_to_a_path_through_the_backups_folder_and_out_is_written(
    csv_path: Path,
) -> None:
    # refused as "in the backups folder of another job": '..' was not applied
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a")
        target = Path(f"{csv_path}.backups") / ".." / "copy.csv"
        journal.export(target)
    assert (csv_path.parent / "copy.csv").read_text().startswith("ID,")


def test_a_flush_behind_a_stopped_exporter_names_its_process(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        assert exporter_pid(csv_path) == os.getpid()  # the lock file says who exports
    exporter = _start_frozen_exporter(csv_path)
    try:
        assert exporter_pid(csv_path) == exporter.pid
        with csvjournal.open(csv_path, export=False) as journal:
            exporter.send_signal(signal.SIGSTOP)
            journal.record("late", "COMPLETED")
            started = time.monotonic()
            with pytest.raises(csvjournal.FlushTimeoutError) as caught:
                journal.flush(timeout=600)  # not waited out: said at once
            assert f"its exporter, process {exporter.pid}, is stopped" in str(caught.value)
            assert f"kill -CONT {exporter.pid}" in str(caught.value)
            with pytest.raises(csvjournal.FlushTimeoutError, match="is stopped"):
                journal.recover()  # no flush without a timeout waits for it either
            result = CliRunner().invoke(cli, ["recover", str(csv_path)])
            assert result.exit_code == 2
            assert f"process {exporter.pid}, is stopped" in result.stderr
            snap = progress(journal)
            assert (snap.exporter_pid, snap.exporter_stopped) == (exporter.pid, True)
            shown = CliRunner().invoke(cli, ["status", str(csv_path)]).stdout
            assert f"exporter: stopped, process {exporter.pid} (`kill -CONT" in shown
            assert time.monotonic() - started < 60
            standby = csvjournal.open(csv_path, busy_timeout=600)  # exporting, standing by
            standby.record("later", "COMPLETED")
            started = time.monotonic()
            with capture_logs() as logs:
                standby.close()  # does not wait 600 s for an exporter that cannot export
            assert time.monotonic() - started < 60
            (behind,) = [entry for entry in logs if entry["event"] == "csv_behind_at_close"]
            assert f"process {exporter.pid}, is stopped" in behind["error"]
            exporter.send_signal(signal.SIGCONT)
            journal.flush(timeout=30)
            assert not progress(journal).exporter_stopped
        assert {"late", "later"} <= set(_rows(csv_path))
    finally:
        exporter.kill()
        exporter.wait()
    assert exporter_pid(csv_path) is None  # nobody holds the lock


@pytest.mark.parametrize("as_json", [False, True])
def test_a_merge_behind_a_stopped_exporter_shows_its_report_then_the_error(
    csv_path: Path, as_json: bool
) -> None:
    # It said only that the CSV was behind (exit 2): the merge, committed, went unsaid.
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a")
    exporter = _start_frozen_exporter(csv_path)
    try:
        exporter.send_signal(signal.SIGSTOP)
        csv_path.write_text(csv_path.read_text() + "new,,\n")
        result = CliRunner().invoke(
            cli, ["import", str(csv_path), "--merge", *(["--json"] if as_json else [])]
        )
        assert result.exit_code == 2
        if as_json:
            assert json.loads(result.stdout)["added"] == ["new"]
        else:
            assert result.stdout.startswith(f"merged {csv_path}: 1 added, ")
        assert result.stderr.startswith(
            "csvjournal: error: the merge is in the journal, but the CSV was not brought up"
        )
        assert f"process {exporter.pid}, is stopped" in result.stderr
        with csvjournal.open(csv_path, export=False) as journal:
            assert journal.get("new") is not None
    finally:
        exporter.kill()
        exporter.wait()


def test_flush_with_a_timeout_too_short_raises_flush_timeout_error(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a")
        journal.flush(timeout=10)
        caught: list[csvjournal.FlushTimeoutError] = []
        for attempt in range(20):  # the exporter waits ~50 ms after an export: no race
            journal.record(f"b{attempt}")
            try:
                journal.flush(timeout=0)
            except csvjournal.FlushTimeoutError as exc:
                caught.append(exc)
                break
        assert caught, "flush(timeout=0) never timed out with the CSV behind"
        assert isinstance(caught[0], TimeoutError)
        assert str(csv_path) in str(caught[0])
        journal.flush(timeout=10)  # and the CSV catches up all the same


@pytest.mark.parametrize("timeout", [float("nan"), -1.0], ids=["nan", "negative"])
def test_flush_refuses_a_timeout_that_is_no_time_at_once(
    journal: csvjournal.Journal, timeout: float
) -> None:
    journal.record("a")
    with pytest.raises(csvjournal.SettingsError, match=f"0 or more seconds, not {timeout}"):
        journal.flush(timeout=timeout)
