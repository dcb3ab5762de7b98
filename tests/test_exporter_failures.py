"""The exporter under failure: a refused replace, a full disk, kill -9, no close()."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from _exporter import exported_rows as _rows
from _exporter import start_exporter
from structlog.testing import capture_logs

import csvjournal
from csvjournal import _writer
from csvjournal.csvio import temp_prefix


def test_a_failing_replace_keeps_the_old_csv_and_is_retried(
    csv_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a", "COMPLETED")
        journal.flush(timeout=10)
        before = csv_path.read_bytes()
        real_replace = os.replace

        def locked_by_excel(src: str, dst: str) -> None:
            raise PermissionError(13, "The process cannot access the file", str(dst))

        with capture_logs() as logs:
            monkeypatch.setattr(os, "replace", locked_by_excel)
            for i in range(5):
                journal.record(f"b{i}", "COMPLETED")  # recording goes on meanwhile
            time.sleep(0.5)
            assert csv_path.read_bytes() == before
            # Each retry writes a temp file and removes it when the replace fails: one may
            # be there at any instant, none stays.
            leftovers = []
            for _ in range(20):
                leftovers.append(list(csv_path.parent.glob(temp_prefix(csv_path) + "*")))
                time.sleep(0.005)
            assert [] in leftovers
            assert all(len(found) <= 1 for found in leftovers)
            monkeypatch.setattr(os, "replace", real_replace)
            journal.flush(timeout=30)
        failures = [e for e in logs if e["event"] == "csv_export_failed"]
        assert len(failures) == 1  # logged once, not once per retry
        assert str(csv_path) in failures[0]["path"]
        assert "cannot access" in failures[0]["error"]
        assert any(e["event"] == "csv_export_recovered" for e in logs)
        assert {f"b{i}" for i in range(5)} <= set(_rows(csv_path))


def test_an_exporting_open_whose_first_export_fails_opens_and_retries(
    csv_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CSV is behind (a worker recorded with no exporter alive) and cannot be replaced
    # now (a read-only folder, Excel holding it): the open goes on, the export is retried.
    csvjournal.open(csv_path, key="ID").close()
    with csvjournal.open(csv_path, export=False) as worker:
        worker.record("a", "COMPLETED")
    before = csv_path.read_bytes()
    real_replace = os.replace

    def read_only(src: str, dst: str) -> None:
        if Path(dst) != csv_path:  # the session's backup is written
            return real_replace(src, dst)
        raise PermissionError(13, "Permission denied", str(dst))

    with capture_logs() as logs:
        monkeypatch.setattr(os, "replace", read_only)
        with csvjournal.open(csv_path) as journal:
            journal.record("b", "COMPLETED")
            assert csv_path.read_bytes() == before
            with pytest.raises(csvjournal.ExportError, match="Permission denied"):
                journal.flush(timeout=5)
            monkeypatch.setattr(os, "replace", real_replace)
            journal.flush(timeout=30)
            assert {"a", "b"} <= set(_rows(csv_path))
    assert [e["event"] for e in logs].count("csv_export_failed") == 1
    assert any(e["event"] == "backup_taken" for e in logs)  # the session went on


def _mount_tmpfs(target: Path, size: str) -> bool:
    target.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


@pytest.mark.slow
def test_disk_full_keeps_the_old_csv_and_recovers_when_space_is_freed(tmp_path: Path) -> None:
    mount = tmp_path / "tiny"
    if not _mount_tmpfs(mount, "1m"):
        pytest.skip("mounting a tmpfs needs root and a kernel that allows it")
    try:
        csv_path = mount / "orders.csv"
        journal_path = tmp_path / "orders.csv.journal"  # the journal has room; the CSV not
        with csvjournal.open(csv_path, key="ID", journal_path=journal_path) as journal:
            journal.record("a", "COMPLETED")
            journal.flush(timeout=10)
            before = csv_path.read_bytes()
            filler = mount / "filler"
            free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
            filler.write_bytes(b"\0" * (free - 4096))
            with capture_logs() as logs:
                journal.record("big", "COMPLETED", BLOB="x" * 200_000)
                time.sleep(0.5)
                assert csv_path.read_bytes() == before
                assert not list(mount.glob(temp_prefix(csv_path) + "*"))
                assert journal.get("big") is not None  # the journal is intact
                filler.unlink()
                journal.flush(timeout=30)
            assert any(e["event"] == "csv_export_failed" for e in logs)
            assert "big" in _rows(csv_path)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


_EXPORTER = textwrap.dedent(
    """
    import sys, time
    import structlog
    import csvjournal
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    journal = csvjournal.open(sys.argv[1])
    print("ready", flush=True)
    i = 0
    while True:
        journal.record(f"{sys.argv[2]}-{i}", "COMPLETED", N=i)
        i += 1
    """
)


@pytest.mark.slow
def test_killing_the_exporter_never_looks_like_a_hand_edit(csv_path: Path) -> None:
    csvjournal.open(csv_path, key="ID").close()
    for round_no in range(12):
        worker = subprocess.Popen(
            [sys.executable, "-c", _EXPORTER, str(csv_path), f"r{round_no}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "ready"
        time.sleep(0.05 + 0.07 * (round_no % 5))
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        with csvjournal.open(csv_path) as journal:  # must not raise CsvChangedError
            journal.flush(timeout=30)
            assert set(_rows(csv_path)) == set(journal.to_dataframe()["ID"])


# An exporter killed with kill -9 right after (after) or right before (before) the rename
# of its export; csvjournal._export.replace_with is where the rename happens.
_KILLED_AT_RENAME = """
import os, signal, sys, time
import csvjournal, csvjournal._export as export
real = export.replace_with
def killed(temp, path):
    if sys.argv[2] == "after":
        real(temp, path)
    os.kill(os.getpid(), signal.SIGKILL)
export.replace_with = killed
journal = csvjournal.open(sys.argv[1])
journal.record(sys.argv[3], "COMPLETED")
time.sleep(60)
"""


@pytest.mark.slow
def test_two_exporters_killed_in_a_row_at_their_renames_leave_no_false_hand_edit(
    csv_path: Path,
) -> None:
    # A is killed after putting its export in place (not yet noted as the last export);
    # B takes over (A's file is the pending export: fine), notes its own export as pending
    # and is killed before its rename. A's file, which csvjournal wrote, must stay known.
    csvjournal.open(csv_path, key="ID").close()
    for moment, key in (("after", "a"), ("before", "b")):
        killed = subprocess.run(
            [sys.executable, "-c", _KILLED_AT_RENAME, str(csv_path), moment, key],
            check=False,
            capture_output=True,
            timeout=60,
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert "a" in _rows(csv_path)
    with csvjournal.open(csv_path) as journal:  # must not raise CsvChangedError
        journal.flush(timeout=30)
    assert {key: row["STATUS"] for key, row in _rows(csv_path).items()} == {
        "a": "COMPLETED",
        "b": "COMPLETED",
    }


def test_a_program_that_never_closes_still_gets_its_last_records_exported(
    csv_path: Path,
) -> None:
    script = (
        "import sys, csvjournal\n"
        "journal = csvjournal.open(sys.argv[1], key='ID')\n"
        "journal.record('unclosed', 'COMPLETED')\n"
    )
    subprocess.run([sys.executable, "-c", script, str(csv_path)], check=True, timeout=60)
    assert _rows(csv_path)["unclosed"]["STATUS"] == "COMPLETED"


def test_flush_says_when_the_exporter_cannot_write_instead_of_waiting(
    csv_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a", "COMPLETED")
        journal.flush(timeout=10)

        def read_only(src: str, dst: str) -> None:
            raise PermissionError(13, "Read-only file system", str(dst))

        real_replace = os.replace
        monkeypatch.setattr(os, "replace", read_only)
        journal.record("b", "COMPLETED")
        started = time.monotonic()
        with pytest.raises(csvjournal.ExportError, match="Read-only file system"):
            journal.flush()  # no timeout: it would wait for good
        assert time.monotonic() - started < 5
        monkeypatch.setattr(os, "replace", real_replace)
        journal.flush(timeout=30)  # the exporter kept trying
        assert "b" in _rows(csv_path)


_FAILING_EXPORTER = """
import os, pathlib, sys, csvjournal
flag, real = pathlib.Path(sys.argv[2]), os.replace
def replace(src, dst):
    if flag.exists():
        raise PermissionError(13, "Read-only file system", str(dst))
    return real(src, dst)
os.replace = replace
with csvjournal.open(sys.argv[1]):
    print("exporting", flush=True)
    sys.stdin.read()
"""


def test_flush_says_why_another_processs_exporter_cannot_write_instead_of_waiting(
    csv_path: Path, tmp_path: Path
) -> None:
    csvjournal.open(csv_path, key="ID").close()
    flag = tmp_path / "read-only"
    flag.touch()
    exporter = start_exporter(_FAILING_EXPORTER, csv_path, flag)
    try:
        with csvjournal.open(csv_path, export=False) as journal:
            journal.record("b", "COMPLETED")
            started = time.monotonic()
            said = rf"process {exporter.pid}\b.*Read-only file system.*every record is safe"
            with pytest.raises(csvjournal.ExportError, match=said):
                journal.flush()  # no timeout: it would wait for good
            assert time.monotonic() - started < 10
            flag.unlink()  # the folder writable again: the exporter catches up
            journal.flush(timeout=30)
            assert "b" in _rows(csv_path)
            journal.record("c", "COMPLETED")
            journal.flush(timeout=30)  # the note went with the failure
        assert "c" in _rows(csv_path)
    finally:
        exporter.communicate("", timeout=60)


def test_a_stored_value_the_encoding_cannot_write_fails_exports_not_the_exporter(
    csv_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a", "COMPLETED", NOTE="x")
        journal.flush(timeout=10)
        # A journal from before record() refused such values: a lone surrogate (what an
        # undecodable command-line argument becomes) recorded unchecked.
        monkeypatch.setattr(_writer, "_check_encodable", lambda *args: None)
        journal.record("a", NOTE="caf\udce9")
        monkeypatch.undo()
        with pytest.raises(csvjournal.ExportError, match="encode"):
            journal.flush(timeout=30)
        journal.record("a", NOTE="café")  # the bad value replaced: exports resume
        journal.flush(timeout=30)
        assert _rows(csv_path)["a"]["NOTE"] == "café"


def test_closing_a_journal_whose_folder_was_deleted_logs_and_does_not_raise(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "job"
    folder.mkdir()
    journal = csvjournal.open(folder / "orders.csv", key="ID")
    journal.record("a", "COMPLETED")
    journal.flush(timeout=30)
    journal.backups()  # the open's backup, taken in the background, is done: not mid-rmtree
    shutil.rmtree(folder)  # the job's folder cleaned up under a running program
    with capture_logs() as logs:
        journal.close()  # at exit too: close never raises for a CSV it cannot write
    assert any(entry["event"] == "csv_behind_at_close" for entry in logs), logs
