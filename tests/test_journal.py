"""The Journal API: record, open and its settings, lifetime.

``batch()`` is in test_journal_batch.py; the reads (counts, pending, history, to_dataframe)
are in test_journal_reads.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import os
import pickle
import re
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from _journal import stored_events as _events
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

import csvjournal
from csvjournal import Journal

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
    journal.record("PO-1", fields={"B": 1, "A": 2}, C=3)  # keywords first, as the spec's
    journal.record("PO-2", D=4, A=5)  # record(po, "COMPLETED", N=3, fields={...}) reads
    assert journal.columns == ["PO_NUMBER", "STATUS", "LAST_PROCESSED", "C", "B", "A", "D"]
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


class _Status(str, enum.Enum):  # noqa: UP042 - the idiom whose str() is "_Status.DONE"
    DONE = "COMPLETED"


class _Key(int, enum.Enum):
    ONE = 1


def test_enum_members_mixed_with_str_or_int_record_their_values(journal: Journal) -> None:
    journal.record(_Key.ONE, _Status.DONE, NOTE=_Status.DONE)  # type: ignore[arg-type]
    row = journal.get("1")
    assert row is not None
    assert (row["PO_NUMBER"], row["STATUS"], row["NOTE"]) == ("1", "COMPLETED", "COMPLETED")
    assert journal.counts() == {"COMPLETED": 1}
    assert journal.pending() == []


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


@pytest.mark.parametrize("fields", [[("OK", 1)], "OK=1", 5])
def test_fields_that_are_not_a_mapping_are_a_type_error(journal: Journal, fields: object) -> None:
    with pytest.raises(TypeError, match="fields must be a mapping"):
        journal.record("PO-1", fields=fields)  # type: ignore[arg-type]
    assert journal.get("PO-1") is None


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("",), {}, "key must not be empty"),
        (("PO-1",), {"fields": {"": 1}}, "a field name must not be empty"),
        (("PO-1",), {"fields": {"A": 1}, "A": 2}, r"field 'A' given twice \(in fields= and as"),
        (("PO-1",), {"fields": {1: "x"}}, "field name 1 is of type int, not text"),
        (("PO-1", "COMPLETED"), {"STATUS": "FAILED"}, "two different statuses"),
        (("PO-1", ""), {}, "status must not be empty"),
        (("PO-1",), {"PO_NUMBER": "PO-2"}, "contradicts the key"),
        (("PO-1",), {"LAST_PROCESSED": "2001-01-01T00:00:00.000Z"}, "set by record"),
        (("PO-1",), {"fields": {"LAST_PROCESSED": None}}, "set by record"),
    ],
)
def test_invalid_records_are_record_errors_and_change_nothing(
    journal: Journal, args: tuple[object, ...], kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(csvjournal.RecordError, match=match) as caught:
        journal.record(*args, **kwargs)  # type: ignore[arg-type]
    assert isinstance(caught.value, ValueError)
    assert str(caught.value).startswith(f"{journal.csv_path}: ")  # names the file
    assert len(journal) == 0
    assert _events(journal) == []


def test_a_str_enum_member_names_the_column_of_its_value(journal: Journal) -> None:
    class Column(enum.StrEnum):
        NOTE = "Note"

    journal.record("PO-1", fields={Column.NOTE: "x"})
    assert journal.columns[-1] == "Note"
    assert type(journal.columns[-1]) is str
    assert journal.get("PO-1")["Note"] == "x"  # type: ignore[index]
    with pytest.raises(csvjournal.RecordError, match="'Note' given twice"):
        journal.record("PO-1", fields={Column.NOTE: "y"}, Note="z")


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


# -- open, settings, lifetime ----------------------------------------------------------------


def test_a_new_journal_needs_a_key_and_creates_nothing_without_one(csv_path: Path) -> None:
    with pytest.raises(csvjournal.SettingsError, match="key="):
        csvjournal.open(csv_path)
    assert list(csv_path.parent.iterdir()) == []


def test_terminal_statuses_written_as_the_clis_list_are_refused(csv_path: Path) -> None:
    with pytest.raises(
        csvjournal.SettingsError,
        match=re.escape("give a set of them: terminal={'COMPLETED', 'NO_ATTACHMENTS'}"),
    ):
        csvjournal.open(csv_path, key="ID", terminal="COMPLETED,NO_ATTACHMENTS")
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


def test_another_encoding_at_reopen_is_said_and_the_stored_one_kept(csv_path: Path) -> None:
    csv_path.write_bytes("ID,NAME\n1,Müller\n".encode("latin-1"))
    csvjournal.open(csv_path, key="ID", encoding="latin-1").close()
    with capture_logs() as logs, csvjournal.open(csv_path, encoding="utf-8") as journal:
        journal.record("2", NAME="Jürgen")
    ignored = [entry for entry in logs if entry["event"] == "encoding_ignored"]
    assert [(e["given"], e["stored"]) for e in ignored] == [("utf-8", "latin-1")]
    assert "Jürgen".encode("latin-1") in csv_path.read_bytes()
    with capture_logs() as logs, csvjournal.open(csv_path, encoding="ISO-8859-1"):
        pass  # the same codec by another name: nothing to say
    assert not [entry for entry in logs if entry["event"] == "encoding_ignored"]


@pytest.mark.parametrize("in_batch", [False, True], ids=["record", "batch"])
def test_a_terminal_set_replaced_by_another_open_reaches_handles_already_open(
    csv_path: Path, in_batch: bool
) -> None:
    with csvjournal.open(csv_path, key="ID") as worker:
        worker.record("a")
        worker.record("b")
        with csvjournal.open(csv_path, terminal={"COMPLETED", "SKIPPED"}, export=False):
            pass
        with worker.batch() if in_batch else contextlib.nullcontext():
            worker.record("a", "SKIPPED")  # done by the new set, not the one it opened with
        assert worker.pending() == ["b"]
    with csvjournal.open(csv_path, export=False) as fresh:
        assert fresh.pending() == ["b"]


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
    [{"status_column": "STATUS"}, {"timestamp_column": "LAST_PROCESSED"}],
    ids=["status", "timestamp"],
)
def test_a_default_column_name_given_explicitly_must_match_the_journal(
    csv_path: Path, kwargs: dict[str, str]
) -> None:
    # Left out, the names are the journal's own; given, even as the default's text, the
    # caller expects them (row["STATUS"]), so a journal with other names is refused.
    csvjournal.open(csv_path, key="ID", status_column="State", timestamp_column="When").close()
    with pytest.raises(csvjournal.SettingsError, match="conflicts with the journal's"):
        csvjournal.open(csv_path, **kwargs)  # type: ignore[arg-type]
    with csvjournal.open(csv_path, export=False) as journal:
        journal.record("a", "COMPLETED")
        assert journal.settings.status_column == "State"
        assert type(journal.settings.status_column) is str
        assert set(journal.get("a") or {}) == {"ID", "State", "When"}


class _Columns(str, enum.Enum):  # noqa: UP042 - str() of it is not its value
    STATE = "State"
    WHEN = "When"


def test_column_names_given_as_str_enum_members_are_their_values(csv_path: Path) -> None:
    names = {"status_column": _Columns.STATE, "timestamp_column": _Columns.WHEN}
    with csvjournal.open(csv_path, key="ID", **names) as journal:  # type: ignore[arg-type]
        journal.record("a", "COMPLETED")
        assert set(journal.get("a") or {}) == {"ID", "State", "When"}
    with csvjournal.open(csv_path, export=False, **names) as again:  # type: ignore[arg-type]
        assert again.settings.status_column == "State"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"key": "STATUS"},
        {"key": "ID", "timestamp_column": "ID"},
        {"key": "ID", "status_column": ""},
        {"key": "ID", "status_column": None},
        {"key": "ID", "timestamp_column": None},
    ],
)
def test_clashing_column_names_are_refused(csv_path: Path, kwargs: dict[str, str]) -> None:
    with pytest.raises(csvjournal.SettingsError):
        csvjournal.open(csv_path, **kwargs)  # type: ignore[arg-type]
    assert list(csv_path.parent.iterdir()) == []  # not even the writers' lock file


def test_a_refused_open_leaves_an_existing_backups_folder_alone(csv_path: Path) -> None:
    folder = Path(f"{csv_path}.backups")
    (folder / "2026-11-30T00-00-00.000000").mkdir(parents=True)
    with pytest.raises(csvjournal.SettingsError):
        csvjournal.open(csv_path, key="ID", timestamp_column="ID")
    assert sorted(p.name for p in csv_path.parent.iterdir()) == [folder.name]
    assert [p.name for p in folder.iterdir()] == ["2026-11-30T00-00-00.000000"]


def test_an_open_that_changes_nothing_does_not_wait_for_a_writer(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="PO_NUMBER", export=False) as writer:
        writer.record("PO-1", "COMPLETED")
        with writer.batch():  # holds the journal's write lock until the block ends
            writer.record("PO-2")
            started = time.monotonic()
            with csvjournal.open(csv_path, export=False, busy_timeout=2) as reader:
                assert time.monotonic() - started < 1.5
                assert reader.counts() == {"COMPLETED": 1}  # the batch is not committed yet
            with pytest.raises(csvjournal.JournalBusyError):  # a new terminal set writes
                csvjournal.open(csv_path, export=False, terminal={"X"}, busy_timeout=0.2)
        assert writer.get("PO-2") is not None


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


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"busy_timeout": -1}, "busy_timeout"),
        ({"busy_timeout": float("nan")}, "busy_timeout"),
        ({"busy_timeout": float("inf")}, "busy_timeout"),
        ({"encoding": "no-such-codec"}, "unknown encoding"),
        ({"terminal": set()}, "terminal"),
        ({"terminal": {"COMPLETED", ""}}, "terminal"),
        ({"terminal": {"COMPLETED", "IN_PROGRESS"}}, "must not include IN_PROGRESS"),
        ({"terminal": {"PENDING"}}, "must not include PENDING"),
        # a byte of a command line that was not text: no file can hold it
        ({"terminal": {"DONE\udcff"}}, "a terminal status 'DONE\\\\udcff' holds"),
        ({"status_column": "S\udcff"}, "status_column"),
        ({"timestamp_column": "T\udcff"}, "timestamp_column"),
        ({"key": "I\udcffD"}, "key"),
        # a column the CSV's encoding cannot write would stop every export for good
        ({"encoding": "ascii", "timestamp_column": "Zeitstämpel"}, "cannot write 'ä'"),
    ],
)
def test_bad_open_arguments_are_settings_errors_and_create_nothing(
    csv_path: Path, kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(csvjournal.SettingsError, match=match):
        csvjournal.open(csv_path, **({"key": "ID"} | kwargs))  # type: ignore[arg-type]
    assert list(csv_path.parent.iterdir()) == []


def test_a_status_column_the_csvs_encoding_cannot_write_is_refused_before_the_import(
    csv_path: Path,
) -> None:
    csv_path.write_bytes(b"ID;Lieferant\r\n1;M\xfcller\r\n")  # cp1252, as Excel saves it
    with pytest.raises(csvjournal.SettingsError, match=r"encoding \(cp1252\) cannot write"):
        csvjournal.open(csv_path, key="ID", encoding="cp1252", status_column="Статус")
    assert [path.name for path in csv_path.parent.iterdir()] == [csv_path.name]
    with csvjournal.open(csv_path, key="ID", encoding="cp1252", status_column="Stätus") as journal:
        journal.record("1", "COMPLETED")  # one it can write: imported, exported
    assert csv_path.read_bytes().startswith(b"ID;Lieferant;St\xe4tus;LAST_PROCESSED\r\n")


def test_an_empty_terminal_set_at_reopen_is_refused_and_keeps_the_stored_one(
    csv_path: Path,
) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a", "COMPLETED")
    with pytest.raises(csvjournal.SettingsError, match="terminal"):
        csvjournal.open(csv_path, terminal=[])
    with csvjournal.open(csv_path) as journal:
        assert journal.settings.terminal == {"COMPLETED"}
        assert journal.pending() == []


def test_a_folder_given_as_the_csv_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(csvjournal.SettingsError, match="a folder, not a CSV file"):
        csvjournal.open(tmp_path, key="ID")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("given", "error", "match"),
    [
        ({"status_column": 5}, TypeError, "status_column must be a column name"),
        ({"timestamp_column": ("S",)}, TypeError, "timestamp_column must be a column name"),
        ({"key": b"ID"}, TypeError, "key must be a column name"),
        ({"keep_backups": 1.5}, TypeError, "keep_backups must be an int"),
        ({"terminal": 5}, TypeError, "terminal= must be a set of statuses, not int 5"),
        ({"busy_timeout": "30"}, TypeError, "busy_timeout must be a number"),
        ({"export": "yes"}, TypeError, "export must be True or False"),
        ({"formula_guard": 1}, TypeError, "formula_guard must be True or False"),
        ({"encoding": "rot13"}, csvjournal.SettingsError, "not an encoding a CSV file can be"),
        ({"encoding": "unicode_escape"}, csvjournal.SettingsError, "not an encoding a CSV"),
        ({"encoding": "idna"}, csvjournal.SettingsError, "not an encoding a CSV file can be"),
        ({"encoding": 8}, TypeError, "encoding must be the name of an encoding"),
        ({"journal_path": "orders.csv"}, csvjournal.SettingsError, "names the CSV itself"),
    ],
)
@pytest.mark.parametrize("csv_exists", [False, True], ids=["new", "import"])
def test_arguments_of_the_wrong_kind_are_refused_before_anything_is_made(
    tmp_path: Path, given: dict[str, object], error: type[Exception], match: str, csv_exists: bool
) -> None:
    # Stored in a new journal, each made every later open of it fail.
    if given.get("journal_path") == "orders.csv":
        given = {"journal_path": tmp_path / "orders.csv"}
    if csv_exists:
        (tmp_path / "orders.csv").write_text("ID\n1\n")
    before = sorted(path.name for path in tmp_path.iterdir())
    with pytest.raises(error, match=match):
        csvjournal.open(tmp_path / "orders.csv", **{"key": "ID", **given})  # type: ignore[arg-type]
    assert sorted(path.name for path in tmp_path.iterdir()) == before


def test_a_fifo_given_as_the_csv_is_a_settings_error_not_a_wait(tmp_path: Path) -> None:
    fifo = tmp_path / "orders.csv"
    os.mkfifo(fifo)
    with pytest.raises(csvjournal.SettingsError, match=r"orders\.csv: not a regular file"):
        csvjournal.open(fifo, key="ID")  # reading it would wait for a writer for good
    assert [path.name for path in tmp_path.iterdir()] == ["orders.csv"]


def test_a_symlink_loop_given_as_the_csv_is_a_journal_io_error(tmp_path: Path) -> None:
    (tmp_path / "a.csv").symlink_to("b.csv")
    (tmp_path / "b.csv").symlink_to("a.csv")
    with pytest.raises(csvjournal.JournalIOError, match=r"a\.csv: cannot be read as a CSV"):
        csvjournal.open(tmp_path / "a.csv", key="ID")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.csv", "b.csv"]


def test_pending_refuses_max_attempts_below_one(journal: Journal) -> None:
    journal.record("PO-1")
    assert journal.pending(max_attempts=1) == ["PO-1"]
    assert journal.next_lease_end(max_attempts=1) is None
    with pytest.raises(csvjournal.SettingsError, match="pending needs max_attempts"):
        journal.pending(max_attempts=0)
    with pytest.raises(csvjournal.SettingsError, match="next_lease_end needs max_attempts"):
        journal.next_lease_end(max_attempts=0)


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
        csvjournal.JournalIOError: OSError,
        csvjournal.BackupNotFoundError: FileNotFoundError,
    }
    for error, builtin in pairs.items():
        assert issubclass(error, csvjournal.CsvJournalError)
        assert issubclass(error, builtin)
    assert set(csvjournal.__all__) >= {e.__name__ for e in pairs} | {"open", "Journal", "Event"}


def test_a_relative_csv_path_stays_in_its_folder_when_the_process_changes_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "job").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "job")
    with csvjournal.open("orders.csv", key="ID") as journal:
        journal.record("a")
        monkeypatch.chdir(tmp_path / "elsewhere")
        journal.record("b", "COMPLETED")  # the exporter thread writes after the chdir
    assert list((tmp_path / "elsewhere").iterdir()) == []
    with csvjournal.open(tmp_path / "job" / "orders.csv") as journal:  # no "edited by hand"
        assert journal.get("b")["STATUS"] == "COMPLETED"  # type: ignore[index]
    assert "b,COMPLETED" in (tmp_path / "job" / "orders.csv").read_text()


@pytest.mark.parametrize("name", ["report?v2.csv", "sales%202026.csv", "a%41.csv", "x#1.csv"])
def test_a_csv_name_with_url_characters_is_a_plain_name(tmp_path: Path, name: str) -> None:
    with csvjournal.open(tmp_path / "aA.csv", key="ID") as other:  # what "a%41" decodes to
        other.record("theirs")
    with csvjournal.open(tmp_path / name, key="ID") as journal:
        journal.record("ours", "COMPLETED")
        assert journal.journal_path == tmp_path / f"{name}.journal"
    with csvjournal.open(tmp_path / name) as journal:
        assert journal.pending() == []
        assert len(journal) == 1
    names = {path.name for path in tmp_path.iterdir()}
    assert names == {"aA.csv", "aA.csv.journal", "aA.csv.backups"} | {
        name,
        f"{name}.journal",
        f"{name}.backups",
    }


def test_a_name_too_long_for_the_files_beside_it_is_refused_up_front(tmp_path: Path) -> None:
    # Made, the journal would fail at its first export for good (a temp name too long).
    for length in (200, 215):
        csvjournal.open(tmp_path / f"{'x' * length}.csv", key="ID").close()
    long_csv = tmp_path / f"{'y' * 216}.csv"
    with pytest.raises(csvjournal.SettingsError, match="at most 219 bytes"):
        csvjournal.open(long_csv, key="ID")
    with pytest.raises(csvjournal.SettingsError, match="too long"):
        csvjournal.open(tmp_path / "a.csv", key="ID", journal_path=tmp_path / ("z" * 230))
    assert not any(path.name.startswith(("y", "z", "a.")) for path in tmp_path.iterdir())


def test_dot_dot_after_a_symlinked_folder_is_resolved_as_the_os_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "real" / "x.csv").write_text("ID\na\nb\n")
    (tmp_path / "lnk").symlink_to(tmp_path / "real" / "sub")
    monkeypatch.chdir(tmp_path)
    with csvjournal.open("lnk/../x.csv", key="ID") as journal:  # real/x.csv, for the OS
        assert len(journal) == 2
    assert (tmp_path / "real" / "x.csv.journal").exists()
    assert not (tmp_path / "x.csv.journal").exists()


def test_settings_show_terminal_statuses_another_open_replaced(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a")
        with csvjournal.open(csv_path, terminal={"COMPLETED", "SKIPPED"}, export=False):
            pass
        assert journal.settings.terminal == {"COMPLETED", "SKIPPED"}
        for task in journal.work(success_status="SKIPPED"):  # terminal now: accepted
            with task:
                pass
        assert journal.get("a")["STATUS"] == "SKIPPED"  # type: ignore[index]


_NEVER_CLOSED = """
import sys
import csvjournal
exporter = csvjournal.open(sys.argv[1], key="ID")  # registered first
exporter.record("k0")
exporter.flush()
worker = csvjournal.open(sys.argv[1], export=False)
assert worker.claim() == ["k0"]
# exits without closing either: the worker's claim is given back, then the CSV written
"""


def test_at_exit_a_claim_given_back_reaches_the_csv(tmp_path: Path) -> None:
    csv_path = tmp_path / "orders.csv"
    script = tmp_path / "never_closed.py"
    script.write_text(_NEVER_CLOSED)
    subprocess.run([sys.executable, str(script), str(csv_path)], check=True, timeout=120)
    assert "k0,PENDING," in csv_path.read_text()
    with csvjournal.open(csv_path, export=False) as journal:
        assert journal.pending() == ["k0"]


def _tree(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def test_a_journal_that_cannot_be_created_is_a_journal_io_error(tmp_path: Path) -> None:
    csv = tmp_path / "orders.csv"
    csv.write_text("ID,A\n1,a\n", encoding="utf-8")
    before = _tree(tmp_path)
    with pytest.raises(csvjournal.JournalIOError, match=r"missing/o\.journal: cannot create"):
        csvjournal.open(csv, key="ID", journal_path=tmp_path / "missing" / "o.journal")
    assert _tree(tmp_path) == before


def test_with_no_lock_files_beside_the_csv_the_journal_kept_elsewhere_still_records(
    tmp_path: Path,
) -> None:
    # As a read-only folder does (for other users than root): the journal works on, and
    # the CSV, which cannot be written, stays as it is while exports fail and are retried.
    csv = tmp_path / "orders.csv"
    csv.write_text("ID,A\n1,a\n", encoding="utf-8")
    for name in ("writer.lock", "exporter.lock"):  # no lock file can be made there
        (Path(f"{csv}.backups") / name).mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    before = csv.read_bytes()
    journal_path = tmp_path / "elsewhere" / "o.journal"
    with capture_logs() as logs, csvjournal.open(csv, key="ID", journal_path=journal_path) as j:
        j.record("1", "COMPLETED")
        j.record("2", "COMPLETED")
        with pytest.raises(csvjournal.ExportError, match="could not write the CSV"):
            j.flush(timeout=10)
        j.export(tmp_path / "copy.csv")
    events = {entry["event"] for entry in logs}
    assert {"writers_queue_unavailable", "csv_export_failed"} <= events
    assert csv.read_bytes() == before
    assert "2,,COMPLETED," in (tmp_path / "copy.csv").read_text(encoding="utf-8")
    with csvjournal.open(csv, journal_path=journal_path, export=False) as j:
        assert j.counts() == {"COMPLETED": 2}


@pytest.mark.parametrize("name", ["", ".", ".."])
def test_open_refuses_a_path_naming_no_csv_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(csvjournal.SettingsError, match="no CSV file named"):
        csvjournal.open(name, key="ID")
    assert list(tmp_path.iterdir()) == []
