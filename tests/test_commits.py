"""What a group commit commits: each call validated alone, the group in one transaction."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

import csvjournal
from csvjournal._groupcommit import Refused
from csvjournal._writer import RecordCall


def _call(key: str, **more: object) -> RecordCall:
    return RecordCall(key, "COMPLETED", None, more, "test-worker")


def test_a_group_commits_its_valid_calls_and_refuses_the_others(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID", export=False) as journal:
        calls = [_call("a", N=1), _call("b", BAD={1}), _call(""), _call("c", N=3)]
        results = journal._commits.commit_group(calls)
        assert isinstance(results[0], int)
        assert isinstance(results[3], int)
        assert results[3] > results[0]
        assert isinstance(results[1], Refused)
        assert isinstance(results[1].error, TypeError)
        assert "BAD" in str(results[1].error)
        assert isinstance(results[2], Refused)
        assert isinstance(results[2].error, csvjournal.RecordError)
        assert journal.counts() == {"COMPLETED": 2}  # a and c, nothing of the others
        assert journal.columns == ["ID", "STATUS", "LAST_PROCESSED", "N"]


def test_a_failed_transaction_fails_the_valid_calls_and_keeps_the_refused_ones_errors(
    csv_path: Path,
) -> None:
    with csvjournal.open(csv_path, key="ID", export=False, busy_timeout=0.2) as journal:
        journal.record("a")
        with closing(sqlite3.connect(f"{csv_path}.journal", isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")  # another writer holds the journal
            results = journal._commits.commit_group([_call("b", BAD={1}), _call("c")])
            with pytest.raises(csvjournal.JournalBusyError):
                journal._commits.commit_group([_call("d")])  # nothing refused: it raises
            other.execute("ROLLBACK")
        assert isinstance(results[0], Refused)
        assert isinstance(results[0].error, TypeError)  # not the busy error
        assert isinstance(results[1], Refused)
        assert isinstance(results[1].error, csvjournal.JournalBusyError)
        assert journal.get("c") is None
        assert journal.get("d") is None
        journal.record("c")  # the journal goes on
        assert len(journal) == 2


@pytest.mark.parametrize(("first", "second"), [("=A", "'=A"), ("'@b", "@b"), ("-x1", "'-x1")])
def test_with_the_formula_guard_a_row_shown_as_another_is_refused_alone(
    csv_path: Path, first: str, second: str
) -> None:
    with csvjournal.open(csv_path, key="ID", export=False, formula_guard=True) as journal:
        journal.record(first, "COMPLETED")
        calls = [_call("a"), _call(second), _call(first, N=2), _call("b")]
        results = journal._commits.commit_group(calls)
        assert isinstance(results[1], Refused)
        assert isinstance(results[1].error, csvjournal.RecordError)
        assert f"{second!r} would show in the CSV as key {first!r}" in str(results[1].error)
        assert [isinstance(r, int) for r in results] == [True, False, True, True]
        assert journal.get(second) is None
        assert journal.get(first)["N"] == "2"  # type: ignore[index]  # its own row: updated
        with pytest.raises(csvjournal.RecordError, match="would show in the CSV"):
            journal.record(second)
        with (
            pytest.raises(csvjournal.RecordError, match="would show in the CSV"),
            journal.batch(),
        ):
            journal.record("c")
            journal.record(second)
        assert len(journal) == 3  # first, a, b: the batch left nothing


def test_two_new_rows_shown_alike_in_one_group_or_batch_are_refused(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID", export=False, formula_guard=True) as journal:
        results = journal._commits.commit_group([_call("=A"), _call("'=A")])
        assert isinstance(results[0], int)
        assert isinstance(results[1], Refused)
        with journal.batch():
            journal.record("+B")
            with pytest.raises(csvjournal.RecordError, match="would show in the CSV"):
                journal.record("'+B")  # queued, not yet written: looked for all the same
        assert journal.get("'=A") is None
        assert journal.get("'+B") is None
        assert len(journal) == 2


@pytest.mark.parametrize("key", ["'-12", "'x", "''=A", "'"])
def test_keys_the_guard_shows_as_no_other_are_accepted(csv_path: Path, key: str) -> None:
    other = key[1:] or "z"
    with csvjournal.open(csv_path, key="ID", export=False, formula_guard=True) as journal:
        journal.record(other)
        journal.record(key)
        assert journal.get(key) is not None


def test_without_the_formula_guard_both_rows_are_kept(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID", export=False) as journal:
        journal.record("=A")
        journal.record("'=A")
    with pytest.raises(csvjournal.SettingsError, match="would show keys \"'=A\" and '=A'"):
        csvjournal.open(csv_path, formula_guard=True)
    with csvjournal.open(csv_path, export=False) as journal:
        assert journal.settings.formula_guard is False
        assert len(journal) == 2


def test_with_the_formula_guard_a_column_shown_as_another_is_refused(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID", export=False, formula_guard=True) as journal:
        journal.record("a", fields={"=X": "1"})
        results = journal._commits.commit_group(
            [_call("b", **{"'=X": "2"}), _call("c", **{"=X": "3", "@Y": "4"})]
        )
        assert isinstance(results[0], Refused)
        assert "column \"'=X\" would show in the header as '=X' does" in str(results[0].error)
        assert isinstance(results[1], int)
        with (
            pytest.raises(csvjournal.RecordError, match="would show in the header"),
            journal.batch(),
        ):
            journal.record("d", fields={"+Z": "5"})
            journal.record("e", fields={"'+Z": "6"})  # its twin only queued so far
        assert journal.columns == ["ID", "STATUS", "LAST_PROCESSED", "=X", "@Y"]
        assert journal.get("b") is None


def test_turning_the_guard_on_over_columns_shown_alike_is_refused(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID", export=False) as journal:
        journal.record("a", fields={"=X": "1", "'=X": "2"})
    with pytest.raises(csvjournal.SettingsError, match="column names \"'=X\" and '=X'"):
        csvjournal.open(csv_path, formula_guard=True)
    with csvjournal.open(csv_path, export=False) as journal:
        assert journal.settings.formula_guard is False
