"""A batch() block's records written in bulk by another thread (csvjournal._bulk): the same
journal, record for record, as the statements run one record at a time leave."""

from __future__ import annotations

import json
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from _journal import stored_events
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import csvjournal
from csvjournal import Journal, _batch, _bulk
from csvjournal._writer import RecordOp, Writer

Op = tuple[str, str | None, dict[str, str]]

STATUSES = [None, "COMPLETED", "FAILED", "IN_PROGRESS", "PENDING"]
TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=6)
ROWS = st.sampled_from("abcdef")  # rows made and claimed before the block, or not
OPS = st.lists(
    st.tuples(
        st.one_of(ROWS, ROWS, ROWS, st.just("a\x00b"), TEXT.filter(bool)),
        st.sampled_from(STATUSES),
        st.dictionaries(st.sampled_from(["A", "B", "Note", "NOTE", "é x"]), TEXT, max_size=3),
    ),
    min_size=6,
    max_size=30,
)


def journal_state(path: Path) -> dict[str, Any]:
    """Everything a journal file holds about rows, columns and events, each row's and
    event's time set aside (checked to agree with each other instead), and whether a row
    has a stored line and a lease rather than what they hold."""
    with closing(sqlite3.connect(path)) as conn:
        columns = [name for (name,) in conn.execute("SELECT name FROM columns ORDER BY pos")]
        at = dict(conn.execute("SELECT seq, at FROM events"))
        stamp = str(columns.index("LAST_PROCESSED"))
        rows = []
        for row in conn.execute(
            "SELECT pos, key, status, cells, line, lease_until, holder, attempts, done, last"
            " FROM rows ORDER BY pos"
        ):
            cells = json.loads(row[3])
            assert cells.pop(stamp) == at[row[-1]]  # the row's time is its last event's
            stored, leased = row[4] is not None, row[5] is not None  # (both hold times)
            rows.append((*row[:3], cells, stored, leased, *row[6:]))
        events = list(
            conn.execute(
                "SELECT seq, key, status, fields, worker, pid, note, prev FROM events ORDER BY seq"
            )
        )
        free = list(conn.execute("SELECT pos, key, attempts FROM free_rows ORDER BY pos"))
    return {"columns": columns, "rows": rows, "events": events, "free_rows": free}


def record_in_batch(folder: Path, ops: list[Op], *, bulk: bool) -> dict[str, Any]:
    """The journal state after ``ops`` recorded in one block, on a journal that has a few
    rows already, exported, two of them claimed, every full buffer written in bulk where
    ``bulk_write`` takes it (or none)."""
    csv = folder / ("bulk.csv" if bulk else "plain.csv")
    with csvjournal.open(csv, key="K") as journal:
        journal.record("a", "COMPLETED", A="old")
        journal.record("b", "IN_PROGRESS")
        journal.record("c", Note="kept")
        for key in "def":
            journal.record(key)
    # (the rows' lines stored as exported: a record must forget its row's)
    with csvjournal.open(csv, export=False) as journal:
        assert journal.claim(2, worker="w") == ["b", "c"]
        with journal.batch():
            for key, status, fields in ops:
                journal.record(key, status, fields=fields)
        return journal_state(journal.journal_path)  # (closing gives claims back)


@pytest.fixture
def small_spills(monkeypatch: pytest.MonkeyPatch) -> None:
    """A spill every 6 records, in bulk however short its runs."""
    monkeypatch.setattr(_batch, "_FLUSH_EVERY", 6)
    monkeypatch.setattr(_bulk, "MIN_RUN", 1)


@pytest.mark.usefixtures("small_spills")
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=OPS)
@example(ops=[(key, "FAILED", {"A": "x"}) for key in "abcdefg"])  # rows as they were, and new
@example(ops=[(key, None, {"A": "x"}) for key in "abcdefg"])
def test_bulk_writes_leave_the_journal_record_by_record_statements_leave(
    ops: list[Op], monkeypatch: pytest.MonkeyPatch
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        in_bulk = record_in_batch(Path(folder), ops, bulk=True)
        with monkeypatch.context() as patched:
            patched.setattr(_batch, "bulk_write", lambda *args: None)
            one_by_one = record_in_batch(Path(folder), ops, bulk=False)
    assert in_bulk == one_by_one


def writer_and_ops(journal: Journal, ops: list[Op]) -> tuple[Writer, list[RecordOp]]:
    writer = Writer(journal.settings)
    prepared = []
    for seq, (key, status, fields) in enumerate(ops, start=1):
        prepared.append(RecordOp(key, status, fields, "2026-12-02T00:00:00.000Z", "w", seq=seq))
    return writer, prepared


@pytest.mark.parametrize(
    ("ops", "bulk"),
    [
        ([(f"k{i}", "COMPLETED", {"A": "1"}) for i in range(256)], True),
        ([(f"k{i}", None, {}) for i in range(256)], True),
        ([(f"k{i}", "COMPLETED", {}) for i in range(255)], False),  # too few to gain
        ([(f"k{i % 200}", "COMPLETED", {}) for i in range(400)], False),  # runs of 200
        ([(f"k{i}", "DONE" if i % 2 else None, {}) for i in range(512)], False),  # take turns
        ([(f"k{i}", "DONE", {"A": "a\x00b" if i == 9 else ""}) for i in range(256)], False),
        ([(f"k{i}\x00", "DONE", {}) for i in range(256)], False),  # NUL: JSON ends text there
    ],
    ids=["set-status", "keep-status", "few", "short-runs", "turns", "nul-value", "nul-key"],
)
def test_bulk_takes_long_runs_without_nul(journal: Journal, ops: list[Op], bulk: bool) -> None:
    writer, prepared = writer_and_ops(journal, ops)
    with closing(sqlite3.connect(journal.journal_path)) as conn:
        write = _bulk.bulk_write(writer, conn, prepared, lambda: None)
    assert (write is not None) == bulk


def test_bulk_leaves_claims_and_other_workers_records_to_executemany(journal: Journal) -> None:
    ops: list[Op] = [(f"k{i}", "COMPLETED", {}) for i in range(300)]
    with closing(sqlite3.connect(journal.journal_path)) as conn:
        writer, prepared = writer_and_ops(journal, ops)
        prepared[5].lease_until = 1.0
        assert _bulk.bulk_write(writer, conn, prepared, lambda: None) is None
        writer, prepared = writer_and_ops(journal, ops)
        prepared[5].worker = "another"
        assert _bulk.bulk_write(writer, conn, prepared, lambda: None) is None


def test_a_new_column_waits_until_the_connection_is_idle(journal: Journal) -> None:
    idle = []
    ops: list[Op] = [(f"k{i}", "COMPLETED", {"A": str(i)} if i == 99 else {}) for i in range(300)]
    with closing(sqlite3.connect(journal.journal_path)) as conn:
        writer, prepared = writer_and_ops(journal, ops)
        assert _bulk.bulk_write(writer, conn, prepared, lambda: idle.append(1)) is not None
        assert idle == [1]  # asked before the column was added
        idle.clear()
        writer.columns.load(conn)
        assert _bulk.bulk_write(writer, conn, prepared, lambda: idle.append(1)) is not None
        assert idle == []


@pytest.fixture
def big(csv_path: Path) -> Iterator[Journal]:
    """An exporting journal: its CSV shows the bulk-written rows' order."""
    with csvjournal.open(csv_path, key="PO_NUMBER") as journal:
        yield journal


def test_a_big_blocks_new_rows_keep_their_order_in_the_csv(big: Journal) -> None:
    keys = [f"PO-{(i * 7919) % 12_000:05d}" for i in range(12_000)]  # not sorted
    with big.batch():
        for i, key in enumerate(keys):
            big.record(key, None if i % 3000 < 1500 else "COMPLETED", N=i)
    big.flush()
    lines = big.csv_path.read_text().splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == keys
    assert big.pending() == [key for i, key in enumerate(keys) if i % 3000 < 1500]
    assert big.get(keys[-1]) == {
        "PO_NUMBER": keys[-1],
        "STATUS": "COMPLETED",
        "LAST_PROCESSED": big.history(keys[-1])[-1].at.isoformat(timespec="milliseconds")[:-6]
        + "Z",
        "N": "11999",
    }


def test_rows_a_big_block_changed_are_rendered_anew(big: Journal) -> None:
    with big.batch():
        for i in range(6000):
            big.record(f"PO-{i}", N=i)
    big.close()  # each row's line is stored as exported
    with csvjournal.open(big.csv_path, export=False) as journal, journal.batch():
        for i in range(6000):
            journal.record(f"PO-{i}", "COMPLETED")
    with csvjournal.open(big.csv_path) as journal:  # its exporter starts from stored lines
        journal.flush()
    lines = big.csv_path.read_text().splitlines()
    assert lines[0] == "PO_NUMBER,STATUS,LAST_PROCESSED,N"
    assert [line.split(",")[1] for line in lines[1:]] == ["COMPLETED"] * 6000


def test_a_block_reads_what_another_thread_is_writing_for_it(journal: Journal) -> None:
    with journal.batch():
        for i in range(6000):
            journal.record(f"PO-{i}", "COMPLETED", N=i)
        assert journal.get("PO-4999") is not None  # in the spill, maybe still being written
        assert len(journal) == 6000
        assert journal.counts() == {"COMPLETED": 6000}


@pytest.mark.parametrize("at", [5000, 5001, 9999])
def test_a_block_that_raises_while_a_spill_is_written_leaves_nothing(
    journal: Journal, at: int
) -> None:
    journal.record("PO-0", "COMPLETED")
    with pytest.raises(RuntimeError), journal.batch():
        for i in range(at):
            journal.record(f"PO-{i}", "FAILED", NEW=i)
        raise RuntimeError("worker crashed")
    assert len(journal) == 1
    assert journal.columns == ["PO_NUMBER", "STATUS", "LAST_PROCESSED"]
    assert len(stored_events(journal)) == 1
    assert journal.record("PO-1", "COMPLETED") > 1  # the journal goes on


def test_a_nested_block_undoes_its_own_spilled_records_only(journal: Journal) -> None:
    with journal.batch():
        for i in range(5500):
            journal.record(f"PO-{i}", "COMPLETED")
        with pytest.raises(KeyError), journal.batch():
            for i in range(5500, 16_000):
                journal.record(f"PO-{i}", "FAILED", INNER=i)
            raise KeyError("inner")
        journal.record("PO-last", "COMPLETED")
    assert len(journal) == 5501
    assert journal.counts() == {"COMPLETED": 5501}
    assert "INNER" not in journal.columns


def test_sqlites_error_in_a_spill_fails_the_block_and_leaves_nothing(journal: Journal) -> None:
    journal.record("PO-0", "COMPLETED")
    with closing(sqlite3.connect(journal.journal_path)) as conn:  # a real SQLite failure
        conn.execute(
            "CREATE TRIGGER refuse AFTER INSERT ON events WHEN new.key = 'PO-100'"
            " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
    names = set()
    with pytest.raises(sqlite3.IntegrityError, match="refused by the test"), journal.batch():
        for i in range(1, 12_000):
            journal.record(f"PO-{i}", "COMPLETED")
            names |= {thread.name for thread in threading.enumerate()}
    assert "csvjournal-batch-writer" in names  # it was written by another thread
    assert len(journal) == 1
    assert len(stored_events(journal)) == 1


def test_a_block_that_goes_on_after_its_records_failed_cannot_commit(journal: Journal) -> None:
    journal.record("PO-0", "COMPLETED")
    with closing(sqlite3.connect(journal.journal_path)) as conn:
        conn.execute(
            "CREATE TRIGGER refuse AFTER INSERT ON events WHEN new.key = 'PO-100'"
            " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
    refused = []
    with pytest.raises(sqlite3.IntegrityError, match="refused by the test"), journal.batch():
        for i in range(1, 12_000):
            try:
                journal.record(f"PO-{i}", "COMPLETED")
            except sqlite3.IntegrityError:
                refused.append(i)  # a worker that logs the error and goes on
    assert refused == list(range(refused[0], 12_000))  # every record from then on
    assert len(journal) == 1
    assert len(stored_events(journal)) == 1
    assert journal.record("PO-1", "COMPLETED") > 1


def test_a_nested_block_whose_records_failed_undoes_them_and_the_outer_block_commits(
    journal: Journal,
) -> None:
    with closing(sqlite3.connect(journal.journal_path)) as conn:
        conn.execute(
            "CREATE TRIGGER refuse AFTER INSERT ON events WHEN new.key = 'IN-100'"
            " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
    with journal.batch():
        for i in range(6000):
            journal.record(f"OUT-{i}", "COMPLETED")
        with pytest.raises(sqlite3.IntegrityError), journal.batch():
            for i in range(12_000):
                journal.record(f"IN-{i}", "COMPLETED")
        journal.record("OUT-last", "COMPLETED")
    assert len(journal) == 6001
    assert len(stored_events(journal)) == 6001
