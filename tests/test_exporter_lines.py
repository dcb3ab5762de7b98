"""The exporter's stored records, its note before each rename, and its temp files."""

from __future__ import annotations

import os
import sys
import time
import zlib
from pathlib import Path

import pytest
from _exporter import exported_rows as _rows

import csvjournal


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
