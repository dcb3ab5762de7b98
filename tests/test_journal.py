"""The Journal API: record, batch, reads, settings, lifetime."""

from __future__ import annotations

import datetime as dt
import pickle
import sqlite3
import time
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

import csvjournal
from csvjournal import Journal


def _events(journal: Journal) -> list[tuple[int, str]]:
    conn = sqlite3.connect(journal.journal_path)
    try:
        return list(conn.execute("SELECT seq, key FROM events ORDER BY seq"))
    finally:
        conn.close()


# -- record -------------------------------------------------------------------------------


def test_record_creates_a_pending_row_with_key_status_and_timestamp(journal: Journal) -> None:
    before = dt.datetime.now(dt.UTC) - dt.timedelta(milliseconds=1)
    seq = journal.record("PO-1")
    row = journal.get("PO-1")
    assert row is not None
    assert row["PO_NUMBER"] == "PO-1"
    assert row["STATUS"] == "PENDING"
    stamp = row["LAST_PROCESSED"]
    assert stamp.endswith("Z")
    assert before <= dt.datetime.fromisoformat(stamp) <= dt.datetime.now(dt.UTC)
    assert seq >= 1
    assert journal.columns == ["PO_NUMBER", "STATUS", "LAST_PROCESSED"]


def test_record_merges_fields_and_keeps_the_status_when_none(journal: Journal) -> None:
    first = journal.record("PO-1", "FAILED", ERROR_MESSAGE="timeout", ATTEMPT=1)
    second = journal.record("PO-1", ATTEMPT=2)
    assert second > first
    row = journal.get("PO-1")
    assert row == {
        "PO_NUMBER": "PO-1",
        "STATUS": "FAILED",
        "LAST_PROCESSED": row["LAST_PROCESSED"],  # type: ignore[index]
        "ERROR_MESSAGE": "timeout",
        "ATTEMPT": "2",
    }
    assert [e.status for e in journal.history("PO-1")] == ["FAILED", "FAILED"]


def test_sequence_numbers_increase_across_keys(journal: Journal) -> None:
    seqs = [journal.record(f"PO-{i % 3}", "COMPLETED") for i in range(10)]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 10


def test_new_columns_append_in_the_order_given(journal: Journal) -> None:
    journal.record("PO-1", fields={"B": 1, "A": 2}, C=3)
    journal.record("PO-2", D=4, A=5)
    assert journal.columns == ["PO_NUMBER", "STATUS", "LAST_PROCESSED", "B", "A", "C", "D"]
    assert journal.get("PO-1")["D"] == ""  # type: ignore[index]
    assert journal.get("PO-2")["B"] == ""  # type: ignore[index]


def test_field_names_are_case_sensitive(journal: Journal) -> None:
    journal.record("PO-1", Note="lower", NOTE="upper")
    row = journal.get("PO-1")
    assert row is not None
    assert (row["Note"], row["NOTE"]) == ("lower", "upper")


def test_fields_named_like_parameters_go_through_fields(journal: Journal) -> None:
    journal.record("PO-1", "COMPLETED", fields={"status": "lower-case column", "fields": "x"})
    row = journal.get("PO-1")
    assert row is not None
    assert (row["STATUS"], row["status"], row["fields"]) == ("COMPLETED", "lower-case column", "x")


def test_the_status_column_may_be_given_as_a_field(journal: Journal) -> None:
    journal.record("PO-1", STATUS="COMPLETED")
    assert journal.get("PO-1")["STATUS"] == "COMPLETED"  # type: ignore[index]
    journal.record("PO-1", "FAILED", STATUS="FAILED")
    assert journal.get("PO-1")["STATUS"] == "FAILED"  # type: ignore[index]


def test_values_are_rendered_as_the_spec_says(journal: Journal) -> None:
    journal.record(
        "PO-1",
        TEXT="00123",
        NA="NA",
        NONE=None,
        INT=7,
        FLOAT=2.5,
        BOOL=False,
        DEC=Decimal("1.10"),
        DAY=dt.date(2026, 11, 28),
        AT=dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC),
    )
    row = journal.get("PO-1")
    assert row is not None
    assert {k: row[k] for k in ("TEXT", "NA", "NONE", "INT", "FLOAT", "BOOL", "DEC")} == {
        "TEXT": "00123",
        "NA": "NA",
        "NONE": "",
        "INT": "7",
        "FLOAT": "2.5",
        "BOOL": "False",
        "DEC": "1.10",
    }
    assert (row["DAY"], row["AT"]) == ("2026-11-28", "2026-11-28T12:00:00+00:00")


@pytest.mark.parametrize("value", [{1, 2}, [1], b"bytes", object()])
def test_an_unsupported_value_is_a_type_error_and_records_nothing(
    journal: Journal, value: object
) -> None:
    journal.record("PO-1", "COMPLETED")
    with pytest.raises(TypeError, match="'ATTACHMENTS'"):
        journal.record("PO-2", OK=1, ATTACHMENTS=value)
    assert journal.get("PO-2") is None
    assert "OK" not in journal.columns
    assert len(_events(journal)) == 1


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("",), {}, "key must not be empty"),
        (("PO-1",), {"fields": {"": 1}}, "empty"),
        (("PO-1",), {"fields": {"A": 1}, "A": 2}, "twice"),
        (("PO-1", "COMPLETED"), {"STATUS": "FAILED"}, "two different statuses"),
        (("PO-1", ""), {}, "status must not be empty"),
        (("PO-1",), {"PO_NUMBER": "PO-2"}, "contradicts the key"),
    ],
)
def test_invalid_records_are_record_errors_and_change_nothing(
    journal: Journal, args: tuple[object, ...], kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(csvjournal.RecordError, match=match) as caught:
        journal.record(*args, **kwargs)  # type: ignore[arg-type]
    assert isinstance(caught.value, ValueError)
    assert len(journal) == 0
    assert _events(journal) == []


def test_a_key_column_field_equal_to_the_key_is_accepted(journal: Journal) -> None:
    journal.record("PO-1", PO_NUMBER="PO-1")
    assert journal.get("PO-1")["PO_NUMBER"] == "PO-1"  # type: ignore[index]


def test_keys_are_compared_exactly_as_text(journal: Journal) -> None:
    journal.record("PO-1")
    journal.record("po-1")
    journal.record("PO-1 ")
    journal.record(123)  # type: ignore[arg-type]
    assert len(journal) == 4
    assert journal.get("123") is not None


HOSTILE = [
    'x"); DROP TABLE rows; --',
    "a]b",
    "rowid",
    "\u200b",
    "\u00a0",
    "\ufeff",
    "é" * 3,
    "x" * 5000,
    "'",
    "$1",
    "?",
    ":name",
    "NULL",
    "0",
]


@pytest.mark.parametrize("name", HOSTILE, ids=range(len(HOSTILE)))
def test_any_string_is_a_safe_column_name(csv_path: Path, name: str) -> None:
    with csvjournal.open(csv_path, key="PO_NUMBER") as journal:
        journal.record("PO-1", "COMPLETED", fields={name: "value", "after": "also"})
        assert journal.get("PO-1")[name] == "value"  # type: ignore[index]
    with csvjournal.open(csv_path) as journal:
        row = journal.get("PO-1")
        assert row is not None
        assert row[name] == "value"
        assert row["after"] == "also"
        assert journal.columns[-2:] == [name, "after"]
        assert dict(journal.history("PO-1")[0].fields) == {name: "value", "after": "also"}
        assert journal.counts() == {"COMPLETED": 1}


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=30).filter(
            lambda s: s not in {"PO_NUMBER", "STATUS", "LAST_PROCESSED"}
        ),
        st.text(max_size=50),
        max_size=6,
    ),
    st.text(min_size=1, max_size=20),
)
def test_fields_and_keys_round_trip(journal: Journal, fields: dict[str, str], key: str) -> None:
    journal.record(key, "COMPLETED", fields=fields)
    row = journal.get(key)
    assert row is not None
    for name, value in fields.items():
        assert row[name] == value
    assert row["PO_NUMBER"] == key
    assert dict(journal.history(key)[-1].fields) == fields


# -- batch --------------------------------------------------------------------------------


def test_a_batch_commits_everything_at_the_end(journal: Journal) -> None:
    with journal.batch():
        seqs = [journal.record(f"PO-{i}", "COMPLETED", N=i) for i in range(20_000)]
    assert seqs == list(range(seqs[0], seqs[0] + 20_000))
    assert len(journal) == 20_000
    assert journal.get("PO-19999")["N"] == "19999"  # type: ignore[index]
    assert journal.counts() == {"COMPLETED": 20_000}


def test_a_batch_that_raises_leaves_no_row_column_or_event(journal: Journal) -> None:
    journal.record("PO-0", "COMPLETED")
    with pytest.raises(RuntimeError), journal.batch():
        for i in range(7000):  # more than one internal flush
            journal.record(f"PO-{i + 1}", "FAILED", NEW_COLUMN=i)
        journal.record("PO-0", "FAILED")
        raise RuntimeError("worker crashed")
    assert len(journal) == 1
    assert journal.get("PO-0")["STATUS"] == "COMPLETED"  # type: ignore[index]
    assert journal.columns == ["PO_NUMBER", "STATUS", "LAST_PROCESSED"]
    assert len(_events(journal)) == 1
    seq = journal.record("PO-1", NEW_COLUMN="x")  # numbering and columns carry on cleanly
    assert seq == 2
    assert journal.columns[-1] == "NEW_COLUMN"


def test_a_nested_batch_that_raises_undoes_only_its_own_records(journal: Journal) -> None:
    with journal.batch():
        journal.record("PO-1", "COMPLETED", OUTER=1)
        with pytest.raises(KeyError), journal.batch():
            journal.record("PO-2", "FAILED", INNER=1)
            journal.record("PO-1", "FAILED")
            assert journal.get("PO-2") is not None  # visible inside, to this thread
            raise KeyError("inner")
        journal.record("PO-3", "COMPLETED", AFTER=1)
        with journal.batch():
            journal.record("PO-4", NESTED_OK=1)
    assert journal.get("PO-1")["STATUS"] == "COMPLETED"  # type: ignore[index]
    assert journal.get("PO-2") is None
    assert journal.get("PO-3") is not None
    assert journal.get("PO-4")["NESTED_OK"] == "1"  # type: ignore[index]
    assert "INNER" not in journal.columns
    assert journal.columns[3:] == ["OUTER", "AFTER", "NESTED_OK"]
    assert [key for _, key in _events(journal)] == ["PO-1", "PO-3", "PO-4"]


def test_a_batch_sees_its_own_records_and_others_see_them_after_commit(
    journal: Journal,
) -> None:
    other = csvjournal.open(journal.csv_path, export=False)
    try:
        with journal.batch():
            journal.record("PO-1", "COMPLETED")
            assert journal.get("PO-1") is not None
            assert other.get("PO-1") is None
        assert other.get("PO-1") is not None
    finally:
        other.close()


@pytest.mark.parametrize("call", ["flush", "recover", "export", "close"])
def test_waiting_for_other_writers_inside_a_batch_is_refused_at_once(
    journal: Journal, call: str
) -> None:
    # The exporter writes to the journal too: flush(), recover() or close() under the
    # block's own write lock would wait for ever or for the whole busy timeout.
    journal.record("PO-1")
    started = time.monotonic()
    with pytest.raises(csvjournal.BatchOpenError, match=call), journal.batch():
        journal.record("PO-2", "COMPLETED")
        getattr(journal, call)()
    assert time.monotonic() - started < 5
    getattr(journal, call)()  # after the block, it works
    with csvjournal.open(journal.csv_path, export=False) as again:
        assert again.pending() == ["PO-1"]
        assert again.get("PO-2") is None  # the block raised: undone


def test_repeated_keys_in_one_batch_keep_their_order(journal: Journal) -> None:
    with journal.batch():
        journal.record("PO-1", "FAILED", A=1)
        journal.record("PO-1", B=2)
        journal.record("PO-1", "COMPLETED", A=3)
        journal.record("PO-1", C=4)
    row = journal.get("PO-1")
    assert row is not None
    assert (row["STATUS"], row["A"], row["B"], row["C"]) == ("COMPLETED", "3", "2", "4")
    assert [e.status for e in journal.history("PO-1")] == [
        "FAILED",
        "FAILED",
        "COMPLETED",
        "COMPLETED",
    ]


# -- reads --------------------------------------------------------------------------------


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


def test_to_dataframe_of_an_empty_journal_has_the_columns(journal: Journal) -> None:
    frame = journal.to_dataframe()
    assert list(frame.columns) == ["PO_NUMBER", "STATUS", "LAST_PROCESSED"]
    assert len(frame) == 0


# -- open, settings, lifetime ----------------------------------------------------------------


def test_a_new_journal_needs_a_key_and_creates_nothing_without_one(csv_path: Path) -> None:
    with pytest.raises(csvjournal.SettingsError, match="key="):
        csvjournal.open(csv_path)
    assert list(csv_path.parent.iterdir()) == []


def test_stored_settings_win_at_reopen(csv_path: Path) -> None:
    with csvjournal.open(
        csv_path, key="ID", status_column="State", timestamp_column="When", terminal="DONE"
    ) as journal:
        journal.record("a", "DONE")
    with csvjournal.open(csv_path) as journal:
        assert journal.settings.key_column == "ID"
        assert journal.settings.status_column == "State"
        assert journal.settings.timestamp_column == "When"
        assert journal.settings.terminal == {"DONE"}
        assert journal.get("a")["State"] == "DONE"  # type: ignore[index]
    with (
        capture_logs() as logs,
        csvjournal.open(csv_path, key="ID", terminal={"DONE", "SKIPPED"}) as journal,
    ):
        assert journal.settings.terminal == {"DONE", "SKIPPED"}
    replaced = [entry for entry in logs if entry["event"] == "terminal_statuses_replaced"]
    assert replaced[0]["old"] == ["DONE"]
    assert replaced[0]["new"] == ["DONE", "SKIPPED"]
    with csvjournal.open(csv_path) as journal:
        assert journal.settings.terminal == {"DONE", "SKIPPED"}


@pytest.mark.parametrize(
    "kwargs",
    [{"key": "OTHER"}, {"status_column": "Other"}, {"timestamp_column": "Other"}],
)
def test_conflicting_settings_at_reopen_are_refused(csv_path: Path, kwargs: dict[str, str]) -> None:
    csvjournal.open(csv_path, key="ID", status_column="State", timestamp_column="When").close()
    with pytest.raises(csvjournal.SettingsError, match="conflicts"):
        csvjournal.open(csv_path, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"key": "STATUS"},
        {"key": "ID", "timestamp_column": "ID"},
        {"key": "ID", "status_column": ""},
    ],
)
def test_clashing_column_names_are_refused(csv_path: Path, kwargs: dict[str, str]) -> None:
    with pytest.raises(csvjournal.SettingsError):
        csvjournal.open(csv_path, **kwargs)  # type: ignore[arg-type]


def test_a_closed_journal_refuses_use_and_closes_twice(journal: Journal) -> None:
    journal.close()
    journal.close()
    with pytest.raises(csvjournal.JournalClosedError):
        journal.record("PO-1")
    with pytest.raises(csvjournal.JournalClosedError):
        journal.get("PO-1")
    with pytest.raises(csvjournal.JournalClosedError), journal.batch():
        pass
    assert "closed" in repr(journal)


def test_the_context_manager_closes(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a")
    with pytest.raises(csvjournal.JournalClosedError):
        len(journal)


def test_a_pickled_journal_reopens_as_a_working_handle(journal: Journal) -> None:
    journal.record("PO-1", "COMPLETED")
    copy = pickle.loads(pickle.dumps(journal))
    try:
        assert copy is not journal
        assert copy.get("PO-1")["STATUS"] == "COMPLETED"
        copy.record("PO-2")
        assert journal.get("PO-2") is not None
    finally:
        copy.close()


def test_a_database_url_is_not_supported_yet(csv_path: Path) -> None:
    with pytest.raises(csvjournal.SettingsError, match="url"):
        csvjournal.open(csv_path, key="ID", url="postgresql://localhost/x")


def test_every_error_is_a_csvjournal_error_and_its_builtin() -> None:
    pairs = {
        csvjournal.CsvFormatError: ValueError,
        csvjournal.CsvChangedError: ValueError,
        csvjournal.SettingsError: ValueError,
        csvjournal.RecordError: ValueError,
        csvjournal.SchemaTooNewError: RuntimeError,
        csvjournal.NetworkFilesystemError: OSError,
        csvjournal.JournalBusyError: TimeoutError,
        csvjournal.ExportError: OSError,
        csvjournal.JournalClosedError: RuntimeError,
    }
    for error, builtin in pairs.items():
        assert issubclass(error, csvjournal.CsvJournalError)
        assert issubclass(error, builtin)
    assert set(csvjournal.__all__) >= {e.__name__ for e in pairs} | {"open", "Journal", "Event"}
