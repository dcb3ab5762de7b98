"""import --merge: hand edits of the CSV brought into the journal."""

from __future__ import annotations

from pathlib import Path

import pytest

import csvjournal


def _start(csv_path: Path) -> None:
    csv_path.write_text(
        "ID,STATUS,NOTE,LAST_PROCESSED\na,PENDING,x,\nb,COMPLETED,y,\nc,FAILED,z,\n",
        encoding="utf-8",
    )
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("c", "COMPLETED")


def test_merge_adds_updates_and_never_moves_a_terminal_row_back(csv_path: Path) -> None:
    _start(csv_path)
    text = csv_path.read_text(encoding="utf-8")
    text = text.replace("a,PENDING,x", "a,FAILED,x2").replace("c,COMPLETED", "c,PENDING")
    text = text.replace("b,COMPLETED,y,\n", "") + "d,,new,\n"
    csv_path.write_text(text, encoding="utf-8")
    with pytest.raises(csvjournal.CsvChangedError):
        csvjournal.open(csv_path)
    report = csvjournal.merge_csv(csv_path)
    assert report.added == ["d"]
    assert report.updated == ["a"]
    assert report.terminal_kept == ["c"]
    assert report.missing == ["b"]
    with csvjournal.open(csv_path) as journal:  # the merged file is accepted now
        assert journal.get("a")["NOTE"] == "x2"  # type: ignore[index]
        assert journal.get("a")["STATUS"] == "FAILED"  # type: ignore[index]
        assert journal.get("c")["STATUS"] == "COMPLETED"  # type: ignore[index]
        assert journal.get("d")["STATUS"] == "PENDING"  # type: ignore[index]
        assert journal.get("b") is not None
        assert [e.status for e in journal.history("a")] == ["FAILED"]
    text = csv_path.read_text(encoding="utf-8")
    assert "b,COMPLETED,y," in text  # rewritten from the journal
    assert "c,COMPLETED,z," in text


def test_rows_deleted_by_hand_come_back_after_a_merge_that_changed_nothing(
    csv_path: Path,
) -> None:
    _start(csv_path)
    exported = csv_path.read_text(encoding="utf-8")
    csv_path.write_text(exported.replace("b,COMPLETED,y,\n", ""), encoding="utf-8")
    report = csvjournal.merge_csv(csv_path)
    assert (report.added, report.updated, report.missing) == ([], [], ["b"])
    with csvjournal.open(csv_path):  # the merged file is accepted, and written anew
        pass
    assert csv_path.read_text(encoding="utf-8") == exported


def test_merging_a_bad_csv_changes_nothing(csv_path: Path) -> None:
    _start(csv_path)
    bad = csv_path.read_text(encoding="utf-8") + "a,PENDING,dup,\n"
    csv_path.write_text(bad, encoding="utf-8")
    with pytest.raises(csvjournal.CsvFormatError, match="duplicate key 'a'"):
        csvjournal.merge_csv(csv_path)
    with csvjournal.open(csv_path, export=False) as journal:
        assert journal.get("a")["NOTE"] == "x"  # type: ignore[index]
    assert csv_path.read_text(encoding="utf-8") == bad


def _latin1_journal(csv_path: Path) -> None:
    csv_path.write_bytes("ID,NAME\n1,Müller\n".encode("latin-1"))
    with csvjournal.open(csv_path, key="ID", encoding="latin-1"):
        pass


def test_merge_reads_the_csv_in_the_journals_encoding(csv_path: Path) -> None:
    _latin1_journal(csv_path)
    with csv_path.open("ab") as handle:
        handle.write("2,Gérard,PENDING,\n".encode("latin-1"))
    with pytest.raises(csvjournal.CsvChangedError):
        csvjournal.open(csv_path)
    report = csvjournal.merge_csv(csv_path)
    assert (report.added, report.updated) == (["2"], [])
    with csvjournal.open(csv_path) as journal:  # accepted, and written anew in latin-1
        assert journal.get("2")["NAME"] == "Gérard"  # type: ignore[index]
    lines = csv_path.read_bytes().decode("latin-1").splitlines()
    assert lines[1] == "1,Müller,PENDING,"
    assert lines[2].startswith("2,Gérard,PENDING,20")  # recorded by the merge: a timestamp


def test_merge_encoding_given_wins_over_the_journals(csv_path: Path) -> None:
    _latin1_journal(csv_path)
    text = csv_path.read_bytes().decode("latin-1")
    csv_path.write_bytes((text + "2,Gérard,PENDING,\n").encode("utf-8"))  # saved as UTF-8
    report = csvjournal.merge_csv(csv_path, encoding="utf-8")
    assert (report.added, report.updated) == (["2"], [])
    with csvjournal.open(csv_path, export=False) as journal:
        assert journal.get("1")["NAME"] == "Müller"  # type: ignore[index]
        assert journal.get("2")["NAME"] == "Gérard"  # type: ignore[index]


def test_merging_a_deleted_csv_is_a_journal_io_error_naming_it(csv_path: Path) -> None:
    _start(csv_path)
    csv_path.unlink()
    with pytest.raises(csvjournal.JournalIOError, match="could not read the CSV") as raised:
        csvjournal.merge_csv(csv_path)
    assert str(csv_path) in str(raised.value)
    with csvjournal.open(csv_path, export=False) as journal:
        assert journal.counts() == {"PENDING": 1, "COMPLETED": 2}
