"""Keys and column names the formula guard shows alike (``=A`` and ``'=A``): refused at
import, by a record (alone in its group commit), in a batch, and when an open turns the
guard on over them."""

from __future__ import annotations

from pathlib import Path

import pytest
from _csvio import names as _names

import csvjournal
from csvjournal._groupcommit import Refused
from csvjournal._writer import RecordCall


def _call(key: str, **more: object) -> RecordCall:
    return RecordCall(key, "COMPLETED", None, more, "test-worker")


def test_with_the_formula_guard_keys_it_would_show_alike_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_bytes(b"ID,N\n'@b,1\nx,2\n@b,3\n'-7,4\n-7,5\n")
    before = path.read_bytes()
    with pytest.raises(
        csvjournal.CsvFormatError,
        match=r"line 4, column 1: key '@b' would show in the CSV as key \"'@b\" \(line 2\)",
    ):
        csvjournal.open(path, key="ID", formula_guard=True)
    assert _names(tmp_path) == ["orders.csv"]
    assert path.read_bytes() == before
    with csvjournal.open(path, key="ID", export=False) as journal:  # no guard: 5 rows
        assert len(journal) == 5


def test_with_the_formula_guard_header_names_it_would_show_alike_are_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "orders.csv"
    path.write_bytes(b"ID,=X,'=X\n1,a,b\n")
    with pytest.raises(
        csvjournal.CsvFormatError,
        match=r"line 1, column 7: header name \"'=X\" would show as '=X' \(line 1, column 4\)",
    ):
        csvjournal.open(path, key="ID", formula_guard=True)
    assert _names(tmp_path) == ["orders.csv"]


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
    backups = sorted(Path(f"{csv_path}.backups").iterdir())
    for _ in range(3):  # each refused before its backup: none pushes an older one out
        with pytest.raises(csvjournal.SettingsError, match="would show keys \"'=A\" and '=A'"):
            csvjournal.open(csv_path, formula_guard=True, keep_backups=2)
    assert sorted(Path(f"{csv_path}.backups").iterdir()) == backups
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


def test_one_record_naming_both_columns_is_refused(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID", export=False, formula_guard=True) as journal:
        with pytest.raises(csvjournal.RecordError, match="would show in the header"):
            journal.record("1", fields={"=X": "a", "'=X": "b"})
        with (
            pytest.raises(csvjournal.RecordError, match="would show in the header"),
            journal.batch(),
        ):
            journal.record("2", fields={"+Y": "a", "'+Y": "b"})
        assert journal.columns == ["ID", "STATUS", "LAST_PROCESSED"]


@pytest.mark.parametrize("in_batch", [False, True])
def test_a_claimed_rows_outcome_is_checked_as_a_record_is(csv_path: Path, in_batch: bool) -> None:
    with csvjournal.open(csv_path, key="ID", export=False, formula_guard=True) as journal:
        journal.record("a", fields={"=Y": "1"})
        journal.record("b", "PENDING")
        for task in journal.work():
            with pytest.raises(csvjournal.RecordError, match="would show in the header"):
                if in_batch:
                    with journal.batch():
                        task.record("COMPLETED", fields={"'=Y": "w"})
                else:
                    task.record("COMPLETED", fields={"'=Y": "w"})
            task.record("COMPLETED")
        assert "'=Y" not in journal.columns
        assert journal.counts() == {"COMPLETED": 2}  # each finished without the twin


@pytest.mark.parametrize("group", [False, True], ids=["alone", "in a group"])
def test_a_refused_outcome_leaves_its_row_claimed_by_the_handle(
    csv_path: Path, group: bool
) -> None:
    # The handle must still give the row back when it closes: the refused record did not
    # finish it.
    with csvjournal.open(csv_path, key="ID", export=False, formula_guard=True) as journal:
        journal.record("a", fields={"=X": "1"})
        assert journal.claim(1) == ["a"]
        if group:
            results = journal._commits.commit_group([_call("a", **{"'=X": "2"}), _call("b")])
            assert isinstance(results[0], Refused)
            assert isinstance(results[1], int)
        else:
            with pytest.raises(csvjournal.RecordError, match="would show in the header"):
                journal.record("a", "COMPLETED", fields={"'=X": "2"})
    with csvjournal.open(csv_path, export=False) as again:
        assert (again.get("a") or {}).get("STATUS") == "PENDING"
