"""The single exporter: flush, takeover, atomic replace, failures, hand edits."""

from __future__ import annotations

import csv
import io
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import pytest
from structlog.testing import capture_logs

import csvjournal
from csvjournal.csvio import temp_prefix


def _rows(path: Path) -> dict[str, dict[str, str]]:
    csv.field_size_limit(2**31 - 1)
    text = path.read_bytes().decode("utf-8-sig")
    return {row["ID"]: row for row in csv.DictReader(io.StringIO(text, newline=""))}


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


def _stored_lines(journal_path: Path) -> dict[str, str | None]:
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(journal_path)) as conn:
        return dict(conn.execute("SELECT key, line FROM rows"))


def _stored_line_soon(journal_path: Path, key: str, timeout: float = 10.0) -> str | None:
    """The row's stored record, waiting up to ``timeout`` for the exporter to save it (it
    does so after an export, in the pause before the next)."""
    deadline = time.monotonic() + timeout
    while (line := _stored_lines(journal_path)[key]) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return line


def test_rendered_records_are_kept_for_the_next_exporter(csv_path: Path, tmp_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        for i in range(20):
            journal.record(f"k{i}", "COMPLETED", NOTE=f"note, {i}")
        journal.flush(timeout=10)
        before = _stored_line_soon(journal.journal_path, "k3")
        journal.record("k3", "FAILED")  # changed since the export: its record is void
        stored = _stored_lines(journal.journal_path)
        # void, or already the new one (the exporter wakes at this process's commits)
        assert stored["k3"] is None or "FAILED" in stored["k3"]
        assert before is not None
        assert "COMPLETED" in before
        assert stored["k4"] == f'k4,COMPLETED,{journal.get("k4")["LAST_PROCESSED"]},"note, 4"\n'  # type: ignore[index]
        journal.flush(timeout=10)
        journal.export(tmp_path / "fresh.csv")  # a fresh rendering from the stored records
        assert (tmp_path / "fresh.csv").read_bytes() == csv_path.read_bytes()
        journal.record("k7", "FAILED")
        journal.flush(timeout=10)
        # ... saved after a later export, or at the latest when the exporter closes
    assert "FAILED" in str(_stored_lines(Path(f"{csv_path}.journal"))["k3"])
    assert "FAILED" in str(_stored_lines(Path(f"{csv_path}.journal"))["k7"])
    with csvjournal.open(csv_path, formula_guard=True) as journal:
        journal.record("k5", NOTE="=cmd()")
    assert _rows(csv_path)["k5"]["NOTE"] == "'=cmd()"
    assert _rows(csv_path)["k6"]["NOTE"] == "note, 6"


def test_a_record_voids_the_rows_stored_line(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("k1", "COMPLETED")
    assert _stored_lines(Path(f"{csv_path}.journal"))["k1"] is not None  # saved at close
    with csvjournal.open(csv_path, export=False) as journal:  # nobody exports meanwhile
        journal.record("k1", "FAILED")
        assert _stored_lines(journal.journal_path)["k1"] is None
        journal.flush(timeout=30)  # no exporter alive: this handle exports, and stores it
        assert "FAILED" in str(_stored_lines(journal.journal_path)["k1"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
def test_the_note_of_the_next_csv_is_on_disk_before_the_csv_replaces_the_old(
    csv_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A power cut right after the rename must find the new CSV known to the journal (else
    # the next open would call it a hand edit): the WAL holding the note is synced first.
    from csvjournal import store

    steps: list[str] = []
    real_sync, real_replace = store._sync_data, os.replace

    def sync(fd: int) -> None:
        real_sync(fd)
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".journal-wal"):
            steps.append("wal synced")

    def replace(src: object, dst: object) -> None:
        real_replace(src, dst)  # type: ignore[arg-type]
        if str(dst) == str(csv_path):
            steps.append("csv replaced")

    # Records come through a handle that syncs nothing itself: only the exporter's own
    # syncs are seen.
    with (
        csvjournal.open(csv_path, key="ID", durability="full") as exporting,
        csvjournal.open(csv_path, export=False, durability="normal") as journal,
    ):
        monkeypatch.setattr(store, "_sync_data", sync)
        monkeypatch.setattr(os, "replace", replace)
        for i in range(3):
            journal.record(f"k{i}", "COMPLETED")
            exporting.flush(timeout=30)
    replaced = [i for i, step in enumerate(steps) if step == "csv replaced"]
    assert replaced
    for before, at in zip([-1, *replaced], replaced, strict=False):
        assert "wal synced" in steps[before + 1 : at]


@pytest.mark.parametrize("size", [0, 10, 300_000])
@pytest.mark.parametrize("given", ["bytes", "list", "generator"])
def test_a_temp_file_holds_the_data_and_its_fingerprint(
    tmp_path: Path, size: int, given: str
) -> None:
    from csvjournal._atomicfile import fingerprint, write_temp

    data = os.urandom(size)
    pieces = [data[i : i + 65536] for i in range(0, size, 65536)]
    source = {"bytes": data, "list": pieces, "generator": iter(pieces)}[given]
    temp, digest = write_temp(tmp_path / "x.csv", source)
    assert temp.read_bytes() == data
    assert digest == fingerprint(data) == f"{size}:{zlib.crc32(data):08x}"


def test_an_exporter_that_found_the_csv_current_renders_it_before_the_next_commit(
    csv_path: Path,
) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        for i in range(30):
            journal.record(f"k{i}", "DONE")
    with csvjournal.open(csv_path) as journal:  # the CSV shows everything: nothing to export
        exporter = journal._exporter
        assert exporter is not None
        deadline = time.monotonic() + 10
        while exporter._rendered.seq < 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(exporter._rendered) == 30  # rendered by its thread, without a commit
        assert exporter.exports == 0
        journal.record("k3", "FAILED")
        journal.flush(timeout=10)
    assert "k3,FAILED," in csv_path.read_text()
