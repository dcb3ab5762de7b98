"""The Journal's reads: counts, len, pending, history and to_dataframe."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from pathlib import Path

import pandas as pd
import pytest
from _journal import stored_events as _events
from hypothesis import given, settings
from hypothesis import strategies as st

import csvjournal
from csvjournal import Journal, _reads


def test_counts_len_and_pending(journal: Journal) -> None:
    for key, status in [
        ("PO-1", "COMPLETED"),
        ("PO-2", "FAILED"),
        ("PO-3", None),
        ("PO-4", "NO_ATTACHMENTS"),
        ("PO-5", "IN_PROGRESS"),  # no lease: pending
    ]:
        journal.record(key, status)
    assert journal.counts() == {
        "COMPLETED": 1,
        "FAILED": 1,
        "PENDING": 1,
        "NO_ATTACHMENTS": 1,
        "IN_PROGRESS": 1,
    }
    assert len(journal) == 5
    assert journal.pending() == ["PO-2", "PO-3", "PO-5"]


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(st.text(min_size=1, max_size=12), st.sampled_from(["COMPLETED", "FAILED", None])),
        max_size=30,
        unique_by=lambda item: item[0],
    )
)
def test_pending_lists_any_keys_in_csv_order(
    tmp_path_factory: pytest.TempPathFactory, items: list[tuple[str, str | None]]
) -> None:
    # keys of every kind (control characters, quotes, non-ASCII) come back exactly
    path = tmp_path_factory.mktemp("pending") / "orders.csv"
    with csvjournal.open(path, key="PO_NUMBER", export=False) as journal:
        with journal.batch():
            for key, status in items:
                journal.record(key, status)
        assert journal.pending() == [key for key, status in items if status != "COMPLETED"]


@pytest.mark.parametrize("lapsed", [False, True])
def test_pending_keeps_keys_holding_separators_whole(csv_path: Path, lapsed: bool) -> None:
    keys = ["a\x1fb", "plain", "c,d", "\x1f", "e\nf", 'say "hi"', "last"]
    with csvjournal.open(csv_path, key="PO_NUMBER", export=False) as journal:
        with journal.batch():
            for key in keys:
                journal.record(key)
        if lapsed:  # rows whose lease ran out are merged in by position
            assert journal.claim(3, lease=0.05) == keys[:3]
            time.sleep(0.1)
        assert journal.pending() == keys


def test_history_is_the_audit_trail_oldest_first(journal: Journal) -> None:
    import os
    import threading

    journal.record("PO-1", "FAILED", ERROR_MESSAGE="timeout")
    journal.record("PO-2")
    journal.record("PO-1", "COMPLETED", ATTACHMENTS_FOUND=3)
    events = journal.history("PO-1")
    assert [e.status for e in events] == ["FAILED", "COMPLETED"]
    assert [dict(e.fields) for e in events] == [
        {"ERROR_MESSAGE": "timeout"},
        {"ATTACHMENTS_FOUND": "3"},
    ]
    assert events[0].seq < events[1].seq
    assert events[0].at.tzinfo is not None
    assert events[0].at.utcoffset() == dt.timedelta(0)
    assert events[1].pid == os.getpid()
    assert events[1].worker.endswith(f":{os.getpid()}:{threading.current_thread().name}")
    assert events[1].note is None
    assert journal.history("PO-404") == []
    with pytest.raises(AttributeError):
        events[0].status = "x"  # type: ignore[misc]
    assert len({*events, *journal.history("PO-1")}) == 2  # hashable, equal when read again


def test_history_follows_a_row_through_batches_threads_and_undone_savepoints(
    journal: Journal,
) -> None:
    import threading

    expected: dict[str, list[str]] = {"PO-1": [], "PO-2": []}

    def note(key: str, label: str) -> None:
        journal.record(key, NOTE=label)
        expected[key].append(label)

    note("PO-1", "single")
    with journal.batch():
        for i in range(3):  # a key twice in one group of statements
            note("PO-1", f"batch {i}")
            note("PO-2", f"batch {i}")
        with pytest.raises(KeyError), journal.batch():
            journal.record("PO-1", NOTE="undone")
            journal.record("PO-3", NOTE="undone")
            raise KeyError("inner")
        note("PO-2", "after the savepoint")
    threads = [
        threading.Thread(
            target=lambda t=t: [note(f"PO-{1 + t % 2}", f"t{t} {i}") for i in range(20)]
        )
        for t in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for key, labels in expected.items():
        events = journal.history(key)
        assert sorted(e.fields["NOTE"] for e in events) == sorted(labels)
        assert [e.seq for e in events] == sorted(e.seq for e in events)
        assert {e.key for e in events} == {key}
    assert journal.history("PO-3") == []
    assert len(_events(journal)) == sum(map(len, expected.values()))


def test_a_rows_stored_record_does_not_grow_with_its_history(journal: Journal) -> None:
    # Each record would otherwise rewrite the row's whole past, and slow down with it.
    def stored_bytes() -> int:
        conn = sqlite3.connect(journal.journal_path)
        try:
            names = [row[1] for row in conn.execute("PRAGMA table_info(rows)")]
            total = " + ".join(f'coalesce(length(CAST("{n}" AS BLOB)), 0)' for n in names)
            return int(conn.execute(f"SELECT {total} FROM rows WHERE key = 'PO-1'").fetchone()[0])
        finally:
            conn.close()

    journal.record("PO-1", "RUNNING", N=1)
    first = stored_bytes()
    with journal.batch():
        for _ in range(2_000):
            journal.record("PO-1", "RUNNING", N=1)
    assert stored_bytes() - first <= 8  # the newest event's number: a few bytes more at most
    assert len(journal.history("PO-1")) == 2_001


def test_to_dataframe_is_all_text_in_csv_order(journal: Journal) -> None:
    journal.record("PO-2", "COMPLETED", CODE="00123", MISSING="NA")
    journal.record("PO-1", AMOUNT=1e5)
    frame = journal.to_dataframe()
    assert list(frame.columns) == [
        "PO_NUMBER",
        "STATUS",
        "LAST_PROCESSED",
        "CODE",
        "MISSING",
        "AMOUNT",
    ]
    assert list(frame["PO_NUMBER"]) == ["PO-2", "PO-1"]
    assert list(frame["CODE"]) == ["00123", ""]
    assert list(frame["MISSING"]) == ["NA", ""]
    assert list(frame["AMOUNT"]) == ["", "100000.0"]
    assert all(isinstance(v, str) for col in frame.columns for v in frame[col])


def test_to_dataframe_reads_as_the_exported_csv(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_reads, "_CHUNK_ROWS", 7)  # rows parsed in several chunks
    with journal.batch():
        for n in range(30):
            fields = {"A": n} if n % 3 else {"B": f"x{n}", "A\u00e9": "\u2603"}
            journal.record(f"PO-{n:02d}", "COMPLETED" if n % 2 else None, **fields)
    journal.flush(timeout=30)
    exported = pd.read_csv(journal.csv_path, dtype=str, keep_default_na=False)
    frame = journal.to_dataframe()
    assert frame.to_dict("split") == exported.to_dict("split")
    assert len(frame) == 30


def test_to_dataframe_of_an_empty_journal_has_the_columns(journal: Journal) -> None:
    frame = journal.to_dataframe()
    assert list(frame.columns) == ["PO_NUMBER", "STATUS", "LAST_PROCESSED"]
    assert len(frame) == 0


def test_a_key_no_row_can_have_reads_as_unknown(journal: Journal) -> None:
    journal.record("PO-1", "FAILED")
    bad = "PO-\udcff"  # a lone surrogate: record() refuses it, so no row has it
    assert journal.get(bad) is None
    assert journal.history(bad) == []
    assert journal.attempts(bad) is None
    assert journal.defer([bad, "PO-1"], 5) == ["PO-1"]
    assert journal.retry([bad]) == []
