"""import --merge: hand edits of the CSV brought into the journal."""

from __future__ import annotations

import codecs
import re
import sqlite3
import time
import tracemalloc
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

import csvjournal
from csvjournal import _reads, merge
from csvjournal.cli import cli
from csvjournal.progress import progress


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


def test_a_guarded_sheet_an_older_csvjournal_wrote_is_read_by_its_rules(
    csv_path: Path,
) -> None:
    # Its guard (rules 1) showed -12,5 as '-12,5, as it showed the text '-12,5 itself; read
    # by today's rules, every such amount became a text with a ' in the journal.
    csv_path.write_text("ID;AMOUNT;NOTE\na;-12,5;x\nb;'=1+1;y\nc;'-1,5;z\n", encoding="utf-8")
    with csvjournal.open(csv_path, key="ID", formula_guard=True) as journal:
        journal.record("a", "COMPLETED")
        journal.flush()
    text = csv_path.read_text(encoding="utf-8")
    assert "a;-12,5;" in text  # shown as it is, today
    older = text.replace("a;-12,5;x", "a;'-12,5;x2")  # as rules 1 showed it, then edited
    csv_path.write_text(older, encoding="utf-8")
    with sqlite3.connect(f"{csv_path}.journal") as conn:  # an older csvjournal's export
        conn.execute("DELETE FROM settings WHERE name = 'csv_guard_rules'")
    conn.close()
    report = csvjournal.merge_csv(csv_path)
    assert report.updated == ["a"]
    with csvjournal.open(csv_path) as journal:
        assert journal.get("a")["AMOUNT"] == "-12,5"  # type: ignore[index]
        assert journal.get("a")["NOTE"] == "x2"  # type: ignore[index]
        assert journal.get("b")["AMOUNT"] == "'=1+1"  # type: ignore[index]
        assert journal.get("c")["AMOUNT"] == "'-1,5"  # type: ignore[index]
        assert [e.status for e in journal.history("c")] == []  # untouched


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


@pytest.mark.parametrize("merge_by", ["api", "cli"])
def test_a_merge_that_records_nothing_while_the_job_idles_rewrites_the_csv(
    csv_path: Path, merge_by: str
) -> None:
    # the job's exporter idles: no commit comes to tell it that the CSV shows an edit
    _start(csv_path)
    with csvjournal.open(csv_path) as job:
        job.flush(timeout=10)
        exported = csv_path.read_text(encoding="utf-8")
        edit = exported.replace("b,COMPLETED,y,\n", "").replace("c,COMPLETED", "c,PENDING")
        csv_path.write_text(edit, encoding="utf-8")
        if merge_by == "api":
            report = csvjournal.merge_csv(csv_path)
            assert (report.terminal_kept, report.missing) == (["c"], ["b"])
            job.flush(timeout=10)
        else:
            result = CliRunner().invoke(cli, ["import", str(csv_path), "--merge"])
            assert result.exit_code == 0, result.output
            assert "1 terminal rows kept, 1 missing from the CSV" in result.output
        assert csv_path.read_text(encoding="utf-8") == exported
        assert progress(job).csv_current


@pytest.mark.parametrize("merge_by", ["api", "cli"])
def test_merging_a_csv_as_csvjournal_wrote_it_merges_nothing(csv_path: Path, merge_by: str) -> None:
    # the last export, behind the journal as it is while a job runs: no edit in it; it was
    # reported as newer records kept over the file's, and a held row's status not taken
    _start(csv_path)
    sheet = csv_path.read_bytes()
    with csvjournal.open(csv_path, export=False) as job:
        job.record("a", "COMPLETED", NOTE="later")
        job.record("d")
        (claimed,) = job.claim(1)
        events = _reads_last(job)
        if merge_by == "api":
            report = csvjournal.merge_csv(csv_path)
            assert report.unedited
            assert (report.newer_kept, report.leased_kept, report.updated) == ([], [], [])
        else:
            result = CliRunner().invoke(cli, ["import", str(csv_path), "--merge"])
            assert result.exit_code == 0, result.output
            assert (
                result.output
                == f"nothing to merge: {csv_path} is as csvjournal wrote it (no hand edits)\n"
            )
        assert _reads_last(job) == events  # nothing recorded
        assert job.get(claimed)["STATUS"] == "IN_PROGRESS"  # type: ignore[index]
        assert job.get("a")["NOTE"] == "later"  # type: ignore[index]
        job.release([claimed])
    assert csv_path.read_bytes() != sheet or merge_by == "api"  # the CLI brought it up to date


def _reads_last(journal: csvjournal.Journal) -> int:
    with journal._reading() as conn:
        return _reads.last_seq(conn)


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


@pytest.mark.parametrize(
    ("saved_as", "bom"),
    [("utf-8", b""), ("utf-8", codecs.BOM_UTF8), ("utf-16-le", codecs.BOM_UTF16_LE)],
    ids=["utf-8", "utf-8 with BOM", "utf-16 with BOM"],
)
def test_merge_reads_a_sheet_a_spreadsheet_re_saved_in_another_encoding(
    csv_path: Path, saved_as: str, bom: bytes
) -> None:
    # LibreOffice, Google Sheets and Excel's "CSV UTF-8" save UTF-8: read as the journal's
    # latin-1, the merge took in "MÃ¼ller" (and a BOM as a column name) without a word.
    _latin1_journal(csv_path)
    text = csv_path.read_bytes().decode("latin-1").replace("Müller", "Müllerin")
    csv_path.write_bytes(bom + (text + "2,Øre,,\n").encode(saved_as))
    report = csvjournal.merge_csv(csv_path)
    assert (report.added, report.updated, report.added_columns) == (["2"], ["1"], [])
    with csvjournal.open(csv_path) as journal:  # written anew in the journal's latin-1
        assert journal.get("1")["NAME"] == "Müllerin"  # type: ignore[index]
        assert journal.get("2")["NAME"] == "Øre"  # type: ignore[index]
    assert (
        csv_path.read_bytes().decode("latin-1").splitlines()[0] == "ID,NAME,STATUS,LAST_PROCESSED"
    )


def test_a_gbk_sheet_stays_gbk_though_its_bytes_read_as_utf8(csv_path: Path) -> None:
    csv_path.write_bytes("ID,NAME\n1,甲\n".encode("gbk"))
    with csvjournal.open(csv_path, key="ID", encoding="gbk"):
        pass
    text = csv_path.read_bytes().decode("gbk")
    csv_path.write_bytes((text + "2,未,,\n").encode("gbk"))  # 未 in GBK: valid UTF-8 ("δ")
    assert csvjournal.merge_csv(csv_path).added == ["2"]
    with csvjournal.open(csv_path, export=False) as journal:
        assert journal.get("2")["NAME"] == "未"  # type: ignore[index]


def test_a_cp1252_sheet_whose_bytes_read_as_utf8_stays_cp1252_when_the_journal_says_so(
    csv_path: Path,
) -> None:
    # "CafÃ©" in cp1252 is the UTF-8 of "Café": read as UTF-8, every row holding such
    # text would change though nobody touched it.
    csv_path.write_bytes("ID,NAME,NOTE\n1,CafÃ©,x\n2,Brau,y\n".encode("cp1252"))
    with csvjournal.open(csv_path, key="ID", encoding="cp1252"):
        pass
    text = csv_path.read_bytes().decode("cp1252")
    csv_path.write_bytes(text.replace("2,Brau,y", "2,Brau,y2").encode("cp1252"))
    report = csvjournal.merge_csv(csv_path)
    assert (report.added, report.updated) == ([], ["2"])
    with csvjournal.open(csv_path, export=False) as journal:
        assert journal.get("1")["NAME"] == "CafÃ©"  # type: ignore[index]


def test_merge_refuses_text_the_journals_encoding_cannot_write_at_its_line(
    csv_path: Path,
) -> None:
    _latin1_journal(csv_path)
    text = csv_path.read_bytes().decode("latin-1")
    csv_path.write_bytes((text + "2,Gérard,,\n3,你好,,\n").encode("utf-8"))
    with pytest.raises(csvjournal.CsvFormatError, match=r"line 4: key '3': field 'NAME' holds"):
        csvjournal.merge_csv(csv_path)
    with csvjournal.open(csv_path, export=False) as journal:
        assert len(journal) == 1  # nothing merged


def test_merge_refuses_a_header_name_the_journals_encoding_cannot_write(csv_path: Path) -> None:
    _latin1_journal(csv_path)
    lines = csv_path.read_bytes().decode("latin-1").splitlines()
    lines = [f"{lines[0]},Status → Done"] + [f"{line}," for line in lines[1:]]
    csv_path.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))
    with pytest.raises(csvjournal.CsvFormatError, match=r"line 1, column 31: header name"):
        csvjournal.merge_csv(csv_path)
    with csvjournal.open(csv_path, export=False) as journal:
        assert journal.columns == ["ID", "NAME", "STATUS", "LAST_PROCESSED"]


def test_a_utf16_journals_sheet_re_saved_as_utf8_without_bom_is_read_as_utf8(
    csv_path: Path,
) -> None:
    csv_path.write_bytes(codecs.BOM_UTF16_LE + "ID,NAME\n1,a\n".encode("utf-16-le"))
    with csvjournal.open(csv_path, key="ID"):
        pass
    text = csv_path.read_bytes().decode("utf-16")
    csv_path.write_bytes((text + "2,b,,\n").encode("utf-8"))
    assert csvjournal.merge_csv(csv_path).added == ["2"]


def _stamped_at(monkeypatch: pytest.MonkeyPatch, stamp: str) -> None:
    """record() stamps the next records with ``stamp`` (a re-formatted cell shows
    minutes: the test needs records minutes apart)."""
    monkeypatch.setattr("csvjournal._writer.timestamp_now", lambda: stamp)


_ROWS = "ID,NAME\nr1,a\nr2,b\n"


def _copy_between(
    csv_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    first: tuple[str, str, dict[str, str]],
    then: tuple[str, str, dict[str, str]],
    shown: str,
) -> None:
    """Record r1 at ``first``'s time, take a copy of the sheet, record r1 at ``then``'s,
    and save the copy back as a spreadsheet would (its stamp re-formatted as ``shown``)
    with r2's NAME edited: a stale sheet over the job's newer record."""
    csv_path.write_text(_ROWS)
    for (stamp, status, fields), export in ((first, True), (then, False)):
        _stamped_at(monkeypatch, stamp)
        with csvjournal.open(csv_path, key="ID") as journal:
            journal.record("r1", status, fields=fields)
        if export:
            copy = csv_path.read_text().replace(stamp, shown)
    csv_path.write_text(copy.replace("r2,b,", "r2,b2,"))


@pytest.mark.parametrize(
    ("day", "shown"),
    [
        ("2026-11-30", "30.11.2026 10:00"),  # Excel, German
        ("2026-11-30", "11/30/2026 10:00 AM"),  # Excel, US
        ("2026-11-30", "2026-11-30 10:00:05"),  # LibreOffice
        ("2026-01-02", "1/2/2026 10:00"),  # 2 January, month first
        ("2026-01-02", "02/01/26 10:00"),  # 2 January, day first
    ],
)
def test_a_stale_sheet_with_re_formatted_stamps_keeps_the_jobs_newer_values(
    csv_path: Path, monkeypatch: pytest.MonkeyPatch, day: str, shown: str
) -> None:
    # The sheet was open in a spreadsheet while the job went on; saved later, its stamps
    # re-formatted: measured against the last export, its old values won over newer ones.
    first = (f"{day}T10:00:05.250Z", "FAILED", {"ERROR_MESSAGE": "boom"})
    then = (f"{day}T10:07:00.000Z", "FAILED", {"ERROR_MESSAGE": "HTTP 503 on retry"})
    _copy_between(csv_path, monkeypatch, first, then, shown)
    report = csvjournal.merge_csv(csv_path)
    assert (report.updated, report.newer_kept) == (["r2"], ["r1"])
    with csvjournal.open(csv_path, export=False) as journal:
        assert journal.get("r1")["ERROR_MESSAGE"] == "HTTP 503 on retry"  # type: ignore[index]
        assert journal.get("r2")["NAME"] == "b2"  # type: ignore[index]


@pytest.mark.parametrize("outcome", ["COMPLETED", "FAILED"])
def test_a_sheet_saved_between_two_records_of_one_minute_keeps_the_second(
    csv_path: Path, monkeypatch: pytest.MonkeyPatch, outcome: str
) -> None:
    # A claim and its outcome often fall in one minute: the re-formatted cell cannot tell
    # them apart, the file's values can (it shows the first one's).
    first = ("2026-11-30T10:00:05.250Z", "IN_PROGRESS", {"RESULT": "partial"})
    then = ("2026-11-30T10:00:40.000Z", outcome, {"RESULT": "final answer"})
    _copy_between(csv_path, monkeypatch, first, then, "30.11.2026 10:00")
    report = csvjournal.merge_csv(csv_path)
    assert (report.updated, report.newer_kept) == (["r2"], ["r1"])
    with csvjournal.open(csv_path, export=False) as journal:
        row = journal.get("r1")
    assert row is not None
    assert (row["STATUS"], row["RESULT"]) == (outcome, "final answer")


def test_a_stamp_whose_day_and_month_may_swap_finds_the_day_the_file_shows(
    csv_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1/2/2026 10:00 is 2 January or 1 February; records on both days, the sheet from
    # the first: the second day's record is newer, not shown.
    first = ("2026-01-02T10:00:01.000Z", "FAILED", {"ERROR_MESSAGE": "January"})
    then = ("2026-02-01T10:00:01.000Z", "FAILED", {"ERROR_MESSAGE": "February"})
    _copy_between(csv_path, monkeypatch, first, then, "1/2/2026 10:00 AM")
    report = csvjournal.merge_csv(csv_path)
    assert report.newer_kept == ["r1"]
    with csvjournal.open(csv_path, export=False) as journal:
        assert journal.get("r1")["ERROR_MESSAGE"] == "February"  # type: ignore[index]


def test_a_re_formatted_stamp_of_the_newest_version_lets_a_status_be_blanked(
    csv_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The usual retry: blank a FAILED row's status in the sheet (re-saved by Excel).
    csv_path.write_text(_ROWS)
    _stamped_at(monkeypatch, "2026-11-30T10:00:05.250Z")
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.claim(worker="w")
        journal.record("r1", "FAILED", ERROR_MESSAGE="boom")
    text = csv_path.read_text().replace("2026-11-30T10:00:05.250Z", "30.11.2026 10:00")
    csv_path.write_text(text.replace("r1,a,FAILED,", "r1,a,,"))
    report = csvjournal.merge_csv(csv_path)
    assert (report.updated, report.newer_kept) == (["r1"], [])
    with csvjournal.open(csv_path, export=False) as journal:
        assert journal.get("r1")["STATUS"] == "PENDING"  # type: ignore[index]


@pytest.mark.parametrize(
    ("keys", "resaved", "message"),
    [
        (["00123", "00124"], ["123", "124"], "key '123' is not in the journal, and its key"
         " '00123' is missing from the file (and 1 more like it)"),
        (["123456789012"], ["1.23457E+11"], "key '1.23457E+11' is not in the journal, and"
         " its key '123456789012'"),  # rounded to the digits shown
        (["12345678901234567"], ["12345678901234600"], "its key '12345678901234567'"),
        (["123", "5"], ["100", "5"], None),  # not a rounding a spreadsheet shows
        (["7", "100000"], ["7", "1E+05"], "key '1E+05' is not in the journal, and its key"
         " '100000'"),
        # keys read as dates, shown as the spreadsheet's locale shows dates
        (["2026-11-01", "2026-11-02"], ["11/1/2026", "11/2/2026"], "key '11/1/2026' is not in"
         " the journal, and its key '2026-11-01' is missing from the file (and 1 more like it):"
         " a spreadsheet read the keys as dates"),
        (["2026-11-01"], ["01.11.2026"], "its key '2026-11-01' is missing"),
        (["2026-03-04"], ["04/03/26"], "its key '2026-03-04' is missing"),
        (["2026-11-01"], ["1-Nov-26"], "its key '2026-11-01' is missing"),
        (["2026-11-01"], ["11/2/2026"], None),  # another day
    ],
)  # fmt: skip
def test_keys_a_spreadsheet_turned_into_numbers_or_dates_are_refused_not_added(
    csv_path: Path, keys: list[str], resaved: list[str], message: str | None
) -> None:
    # Excel drops leading zeros: merged, each row would come back as a new, PENDING row
    # whose work is done a second time.
    csv_path.write_text("ID,NAME\n" + "".join(f"{key},n\n" for key in keys))
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record(keys[0], "COMPLETED")
    text = csv_path.read_text()
    for key, number in zip(keys, resaved, strict=True):
        text = text.replace(f"\n{key},", f"\n{number},")
    csv_path.write_text(text)
    if message is None:
        report = csvjournal.merge_csv(csv_path)  # nothing says which key it was
        changed = [(old, new) for old, new in zip(keys, resaved, strict=True) if old != new]
        assert (report.added, report.missing) == ([n for _, n in changed], [o for o, _ in changed])
        return
    with pytest.raises(csvjournal.CsvFormatError, match=re.escape(message)):
        csvjournal.merge_csv(csv_path)
    with csvjournal.open(csv_path, export=False) as journal:
        assert sorted([*journal.pending(), keys[0]]) == sorted(keys)
        assert len(journal) == len(keys)


def test_a_new_key_beside_its_zero_padded_twin_is_merged(csv_path: Path) -> None:
    csv_path.write_text("ID,NAME\n007,a\n")
    with csvjournal.open(csv_path, key="ID"):
        pass
    csv_path.write_text(csv_path.read_text() + "7,b,,\n")  # both in the file: two rows
    assert csvjournal.merge_csv(csv_path).added == ["7"]


def test_merging_a_deleted_csv_is_a_journal_io_error_naming_it(csv_path: Path) -> None:
    _start(csv_path)
    csv_path.unlink()
    with pytest.raises(csvjournal.JournalIOError, match="could not read the CSV") as raised:
        csvjournal.merge_csv(csv_path)
    assert str(csv_path) in str(raised.value)
    with csvjournal.open(csv_path, export=False) as journal:
        assert journal.counts() == {"PENDING": 1, "COMPLETED": 2}


def _sheet(csv_path: Path, text: str) -> None:
    csv_path.write_text(text, encoding="utf-8")


def test_a_sheet_saved_from_an_older_export_keeps_the_newer_records(csv_path: Path) -> None:
    _sheet(csv_path, "PO,NAME,STATUS,LAST_PROCESSED\n1,a,PENDING,\n2,b,PENDING,\n")
    with csvjournal.open(csv_path, key="PO") as journal:
        journal.flush(timeout=30)
        opened = csv_path.read_text()  # someone opens the sheet in Excel...
        journal.record("2", "FAILED", NAME="b-fixed")  # ... the job goes on, re-exports
        journal.flush(timeout=30)
    _sheet(csv_path, opened.replace("\n1,a,", "\n1,A,"))  # ... and saves the old copy
    report = csvjournal.merge_csv(csv_path)
    assert (report.updated, report.newer_kept) == (["1"], ["2"])
    with csvjournal.open(csv_path, export=False) as journal:
        assert journal.get("1")["NAME"] == "A"  # type: ignore[index]
        assert (journal.get("2")["STATUS"], journal.get("2")["NAME"]) == ("FAILED", "b-fixed")  # type: ignore[index]


def test_a_second_merge_keeps_what_workers_recorded_after_the_first(csv_path: Path) -> None:
    _sheet(csv_path, "PO,NAME,STATUS,LAST_PROCESSED\n1,a,PENDING,\n2,b,PENDING,\n")
    csvjournal.open(csv_path, key="PO").close()
    _sheet(csv_path, csv_path.read_text().replace("\n1,a,", "\n1,A,"))
    assert csvjournal.merge_csv(csv_path).updated == ["1"]
    with csvjournal.open(csv_path, export=False) as worker:
        worker.record("2", "FAILED", NAME="from-worker")  # no export in between
    _sheet(csv_path, csv_path.read_text().replace("\n1,A,", "\n1,Alpha,"))
    report = csvjournal.merge_csv(csv_path)
    assert (report.updated, report.newer_kept) == (["1"], ["2"])
    with csvjournal.open(csv_path, export=False) as journal:
        assert journal.get("1")["NAME"] == "Alpha"  # type: ignore[index]
        assert journal.get("2")["NAME"] == "from-worker"  # type: ignore[index]


def test_with_the_formula_guard_only_real_edits_are_merged(csv_path: Path) -> None:
    _sheet(csv_path, "PO,NOTE,STATUS,LAST_PROCESSED\n@1,=SUM(A1),PENDING,\n2,+x,PENDING,\n")
    csvjournal.open(csv_path, key="PO", formula_guard=True).close()
    assert "'@1,'=SUM(A1)" in csv_path.read_text()  # the export shows guarded values
    with csv_path.open("a", encoding="utf-8") as sheet:
        sheet.write("3,=new,PENDING,\n'=4,x,PENDING,\n")  # two rows typed by hand
    _sheet(csv_path, csv_path.read_text().replace("2,'+x,", "2,'+y,"))
    report = csvjournal.merge_csv(csv_path)
    assert (report.added, report.updated, report.missing) == (["3", "=4"], ["2"], [])
    with csvjournal.open(csv_path, export=False) as journal:
        assert journal.get("@1")["NOTE"] == "=SUM(A1)"  # type: ignore[index]
        assert journal.get("2")["NOTE"] == "+y"  # type: ignore[index]
        assert journal.get("3")["NOTE"] == "=new"  # type: ignore[index]
        assert journal.get("'@1") is None
        assert len(journal) == 4


def test_a_column_renamed_by_hand_is_said_missing_and_added_anew(csv_path: Path) -> None:
    _sheet(csv_path, "PO,NAME,STATUS,LAST_PROCESSED\n1,a,PENDING,\n")
    csvjournal.open(csv_path, key="PO").close()
    _sheet(csv_path, "PO,Name,STATUS,LAST_PROCESSED\n1,A,PENDING,\n")  # NAME renamed
    report = csvjournal.merge_csv(csv_path)
    assert (report.added_columns, report.missing_columns) == (["Name"], ["NAME"])
    with csvjournal.open(csv_path) as journal:
        row = journal.get("1")
        assert row is not None
        assert (row["NAME"], row["Name"]) == ("a", "A")  # the old column keeps its values
    unchanged = csvjournal.merge_csv(csv_path)  # the CSV as csvjournal wrote it since
    assert unchanged.unedited


def test_a_column_added_by_hand_stays_and_a_blanked_status_is_pending(csv_path: Path) -> None:
    _sheet(csv_path, "PO,NAME,STATUS,LAST_PROCESSED\n1,a,FAILED,\n2,b,PENDING,\n")
    csvjournal.open(csv_path, key="PO").close()
    _sheet(csv_path, "PO,NAME,STATUS,LAST_PROCESSED,REVIEWER\n1,a,,,\n2,b,PENDING,,\n")
    report = csvjournal.merge_csv(csv_path)
    assert (report.added_columns, report.updated) == (["REVIEWER"], ["1"])
    csvjournal.open(csv_path).close()
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "PO,NAME,STATUS,LAST_PROCESSED,REVIEWER"
    assert lines[1].startswith("1,a,PENDING,")


def test_a_status_column_deleted_by_hand_changes_no_status(csv_path: Path) -> None:
    _sheet(csv_path, "PO,NAME,STATUS,LAST_PROCESSED\n1,a,FAILED,\n2,b,PENDING,\n")
    csvjournal.open(csv_path, key="PO").close()
    _sheet(csv_path, "PO,NAME,LAST_PROCESSED\n1,A,\n2,b,\n")
    report = csvjournal.merge_csv(csv_path)
    assert report.updated == ["1"]
    with csvjournal.open(csv_path, export=False) as journal:
        assert journal.get("1")["STATUS"] == "FAILED"  # type: ignore[index]
        assert journal.get("1")["NAME"] == "A"  # type: ignore[index]


def test_with_the_formula_guard_a_key_typed_without_its_quote_is_the_same_row(
    csv_path: Path,
) -> None:
    _sheet(csv_path, "ID,STATUS,X\nK1,,a\n=K2,,b\n")
    with csvjournal.open(csv_path, key="ID", formula_guard=True) as journal:
        journal.record("=K2", "COMPLETED", X="=b1")
    text = csv_path.read_text()
    assert "'=K2,COMPLETED," in text
    _sheet(csv_path, text.replace("'=K2,COMPLETED,'=b1", "=K2,FAILED,=b1"))
    report = csvjournal.merge_csv(csv_path)
    assert (report.added, report.updated, report.terminal_kept) == ([], [], ["=K2"])
    with csvjournal.open(csv_path, export=False) as journal:
        assert journal.get("=K2")["STATUS"] == "COMPLETED"  # type: ignore[index]
    with csv_path.open("a", encoding="utf-8") as sheet:
        sheet.write("'=N1,,,\n=N1,,,\n")  # one key, typed both ways
    with pytest.raises(csvjournal.CsvFormatError, match="key '=N1' again"):
        csvjournal.merge_csv(csv_path)


def test_a_timestamp_cell_that_is_no_timestamp_keeps_the_newer_records(csv_path: Path) -> None:
    _sheet(csv_path, "ID,STATUS,X,Y\nK1,,a,y\n")
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("K1", "FAILED", X="a1")
    with csvjournal.open(csv_path, export=False) as worker:
        worker.record("K1", "IN_PROGRESS", Y="worker-result")  # not exported yet
    # re-saved by a spreadsheet in another locale: the cell no longer says which version
    _sheet(csv_path, "ID,STATUS,X,Y,LAST_PROCESSED\nK1,FAILED,a-user,y,30.11.2026 06:35\n")
    report = csvjournal.merge_csv(csv_path)
    assert report.newer_kept == ["K1"]
    with csvjournal.open(csv_path, export=False) as journal:
        row = journal.get("K1")
    assert row is not None
    assert (row["STATUS"], row["Y"], row["X"]) == ("IN_PROGRESS", "worker-result", "a-user")


def _many(csv_path: Path, rows: int) -> str:
    lines = ["ID,STATUS,NOTE,A,B,C,D,E,F,G"]
    lines += [f"K{i:05d},,note {i},a{i},b{i},c{i},d{i},e{i},f{i},g{i}" for i in range(rows)]
    _sheet(csv_path, "\n".join(lines) + "\n")
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("K00001", "COMPLETED")
    return csv_path.read_text(encoding="utf-8")


def test_a_merge_of_many_rows_reads_the_journal_a_chunk_at_a_time(csv_path: Path) -> None:
    text = _many(csv_path, 1_300)
    edited = text.replace("note 7,", "note seven,").replace("note 1250,", "note 1250b,")
    edited = edited.replace("K00001,COMPLETED,", "K00001,FAILED,").replace("K00600,", "K99999,")
    _sheet(csv_path, edited)
    report = csvjournal.merge_csv(csv_path)
    assert report.updated == ["K00007", "K01250"]
    assert (report.added, report.missing, report.terminal_kept) == (
        ["K99999"],
        ["K00600"],
        ["K00001"],
    )
    with csvjournal.open(csv_path, export=False) as journal:
        assert journal.get("K01250")["NOTE"] == "note 1250b"  # type: ignore[index]
        assert len(journal) == 1_301


def test_a_key_repeated_chunks_apart_names_both_lines(csv_path: Path) -> None:
    text = _many(csv_path, 1_300)
    _sheet(csv_path, text + "K00003,,again,,,,,,,,\n")
    before = csv_path.read_bytes()
    with pytest.raises(
        csvjournal.CsvFormatError, match=r"line 1302, .*K00003.*\(first on line 5\)"
    ):
        csvjournal.merge_csv(csv_path)
    assert csv_path.read_bytes() == before


def test_a_merge_holds_no_table_of_the_file_or_the_journal(csv_path: Path) -> None:
    _sheet(csv_path, _many(csv_path, 20_000).replace("note 19999,", "note last,"))
    size = csv_path.stat().st_size
    tracemalloc.start()
    try:
        report = csvjournal.merge_csv(csv_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.updated == ["K19999"]
    # The bytes and their text (2x), and the keys seen: short rows, so about 2x more. Each
    # row of the file as lists and of the journal as dicts made 18x.
    assert peak < 6 * size, f"{peak / size:.1f}x the file"


def test_with_the_formula_guard_one_key_typed_both_ways_chunks_apart_is_refused(
    csv_path: Path,
) -> None:
    filler = "".join(f"F{i},,x\n" for i in range(700))
    _sheet(csv_path, f"ID,STATUS,X\n'=N1,,a\n{filler}")
    with csvjournal.open(csv_path, key="ID", formula_guard=True):
        pass
    with csv_path.open("a", encoding="utf-8") as sheet:
        sheet.write("=N1,,,\n")
    before = csv_path.read_bytes()
    again = r"line 703, .*key \"'=N1\" again \(line 2\)"
    with pytest.raises(csvjournal.CsvFormatError, match=again):
        csvjournal.merge_csv(csv_path)
    assert csv_path.read_bytes() == before


def test_a_broken_row_is_named_in_the_dialect_the_journal_exports(csv_path: Path) -> None:
    # ' is the quote character only because one field needs it: one ragged row among the
    # first records would make a fresh guess take " and blame line 2
    csv_path.write_text("ID,NAME\n1,'a,b'\n2,c\n3,d\n4,e\n", encoding="utf-8")
    with csvjournal.open(csv_path, key="ID") as journal:
        assert journal.settings.dialect.quotechar == "'"
    edited = csv_path.read_text(encoding="utf-8").replace("3,d,", "3,d,extra,")
    csv_path.write_text(edited, encoding="utf-8")
    with pytest.raises(csvjournal.CsvFormatError, match=r"line 4, column \d+: 5 fields"):
        csvjournal.merge_csv(csv_path)


def test_a_sheet_saved_with_another_quote_character_is_still_merged(csv_path: Path) -> None:
    csv_path.write_text("ID,NOTE\n1,'a,b'\n2,x\n", encoding="utf-8")
    with csvjournal.open(csv_path, key="ID") as journal:
        assert journal.settings.dialect.quotechar == "'"
    resaved = csv_path.read_text(encoding="utf-8").replace("'a,b'", '"a,b"')
    csv_path.write_text(resaved.replace("2,x,", "2,y,"), encoding="utf-8")
    report = csvjournal.merge_csv(csv_path)
    assert report.updated == ["2"]
    with csvjournal.open(csv_path, export=False) as journal:
        assert journal.get("1")["NOTE"] == "a,b"  # type: ignore[index]


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_a_sheet_saved_with_another_delimiter_is_still_merged(
    csv_path: Path, delimiter: str
) -> None:
    _start(csv_path)
    text = csv_path.read_text(encoding="utf-8").replace("a,PENDING,x", "a,PENDING,x2")
    csv_path.write_text(text.replace(",", delimiter), encoding="utf-8")
    report = csvjournal.merge_csv(csv_path)
    assert report.updated == ["a"]
    with csvjournal.open(csv_path) as journal:  # written anew in the journal's dialect
        assert journal.get("a")["NOTE"] == "x2"  # type: ignore[index]
    assert csv_path.read_text(encoding="utf-8").startswith("ID,STATUS,NOTE,LAST_PROCESSED\n")


@pytest.mark.parametrize("key", ["'=K", "'@k", "'x"])
def test_with_the_formula_guard_a_key_with_its_own_quote_is_its_row(
    csv_path: Path, key: str
) -> None:
    _sheet(csv_path, f"ID,STATUS,X\n{key},,a\nK1,,b\n")
    with csvjournal.open(csv_path, key="ID", formula_guard=True):
        pass
    exported = csv_path.read_text(encoding="utf-8")
    assert f"\n{key},,a," in exported  # the guard shows it as it is
    _sheet(csv_path, exported)  # saved again, untouched
    report = csvjournal.merge_csv(csv_path)
    assert (report.added, report.updated, report.missing) == ([], [], [])
    _sheet(csv_path, exported.replace(f"\n{key},,a", f"\n{key[1:]},,a2"))
    report = csvjournal.merge_csv(csv_path)  # typed without the '
    if key == "'x":  # ... which the guard does not add to x: another row
        assert (report.added, report.missing) == (["x"], [key])
    else:
        assert (report.added, report.updated, report.missing) == ([], [key], [])
        with csvjournal.open(csv_path, export=False) as journal:
            assert journal.get(key)["X"] == "a2"  # type: ignore[index]


def test_with_the_formula_guard_guarded_header_names_are_the_journals_columns(
    csv_path: Path,
) -> None:
    _sheet(csv_path, "=ID,@N,'+P\n1,a,b\n")
    with csvjournal.open(csv_path, key="=ID", formula_guard=True):
        pass
    exported = csv_path.read_text(encoding="utf-8")
    assert exported.startswith("'=ID,'@N,'+P,STATUS,LAST_PROCESSED\n")
    _sheet(csv_path, exported.replace("1,a,b", "1,a2,b2").replace(",LAST_PROCESSED", ",@Q"))
    report = csvjournal.merge_csv(csv_path)
    assert (report.updated, report.added_columns) == (["1"], ["@Q"])
    with csvjournal.open(csv_path, export=False) as journal:
        row = journal.get("1")
        assert row is not None
        # '+P is the column with its own ', @N the one without
        assert (row["@N"], row["'+P"], row["@Q"]) == ("a2", "b2", "")
        assert journal.columns == ["=ID", "@N", "'+P", "STATUS", "LAST_PROCESSED", "@Q"]
    _sheet(csv_path, "'=ID,'@N,@N\n1,a,b\n")
    with pytest.raises(
        csvjournal.CsvFormatError,
        match=r"line 1, column 10: header name '@N' again \(line 1, column 6\)",
    ):
        csvjournal.merge_csv(csv_path)


def test_a_sheet_pandas_read_with_dates_keeps_the_jobs_newer_records(csv_path: Path) -> None:
    # an analyst reads the sheet with its stamps as dates, the job records on, the sheet
    # comes back with pandas' stamps (2026-11-30 14:44:12.345000+00:00)
    csv_path.write_text("PO,NOTE\nA1,\nA2,\n", encoding="utf-8")
    with csvjournal.open(csv_path, key="PO") as job:
        job.record("A2", "FAILED", ERROR="timed out")
        job.flush(timeout=10)
        sheet = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
        sheet["LAST_PROCESSED"] = pd.to_datetime(sheet["LAST_PROCESSED"], format="ISO8601")
        sheet.loc[sheet.PO == "A1", "NOTE"] = "check supplier"
        time.sleep(0.01)  # the next record's stamp is another millisecond
        job.record("A2", "FAILED", ERROR="HTTP 404")
        job.flush(timeout=10)
        sheet.to_csv(csv_path, index=False)
        assert "+00:00" in csv_path.read_text(encoding="utf-8")
        report = csvjournal.merge_csv(csv_path)
        assert (report.updated, report.newer_kept) == (["A1"], ["A2"])
        assert job.get("A2")["ERROR"] == "HTTP 404"  # type: ignore[index]
        assert job.get("A1")["NOTE"] == "check supplier"  # type: ignore[index]


@pytest.mark.parametrize("typed", ["PENDING", "", "COMPLETED"])
def test_a_row_a_worker_holds_keeps_its_status_but_takes_other_edits(
    csv_path: Path, typed: str
) -> None:
    csv_path.write_text("ID,NOTE\nA1,\nA2,\n", encoding="utf-8")
    with csvjournal.open(csv_path, key="ID") as job:
        assert job.claim(1, lease=600, worker="w1") == ["A1"]
        job.flush(timeout=10)
        text = csv_path.read_text(encoding="utf-8")
        csv_path.write_text(text.replace("A1,,IN_PROGRESS", f"A1,look,{typed}"), encoding="utf-8")
        report = csvjournal.merge_csv(csv_path)
        assert (report.leased_kept, report.updated) == (["A1"], ["A1"])
        row = job.get("A1")
        assert row is not None
        assert (row["STATUS"], row["NOTE"]) == ("IN_PROGRESS", "look")
        assert job.claim(2, lease=600, worker="w2") == ["A2"]  # not A1 a second time
        assert job.extend(["A1"], 600, worker="w1") == ["A1"]  # w1 holds it still
        job.flush(timeout=10)
        job.release(["A1"], worker="w1")
        job.flush(timeout=10)  # once nobody holds it, the file's status is taken
        text = csv_path.read_text(encoding="utf-8")
        csv_path.write_text(text.replace("A1,look,PENDING", "A1,look,COMPLETED"), encoding="utf-8")
        assert csvjournal.merge_csv(csv_path).leased_kept == []
        assert job.get("A1")["STATUS"] == "COMPLETED"  # type: ignore[index]


def test_a_merge_works_its_rows_out_without_holding_the_journal(
    csv_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # workers record while a big sheet is compared (tens of seconds): they must not wait
    # for the merge, and a row one of them changed meanwhile keeps the newer record
    csv_path.write_text("ID,NOTE\na,x\nb,y\n", encoding="utf-8")
    with csvjournal.open(csv_path, key="ID") as job:
        job.flush(timeout=10)
        sheet = csv_path.read_text(encoding="utf-8")
        csv_path.write_text(sheet.replace("a,x,", "a,x2,").replace("b,y,", "b,y2,"))
        real, recorded = _reads.rows_by_key, []

        def meanwhile(conn: object, columns: list[str], keys: list[str]) -> object:
            if not recorded:  # a worker, while the merge reads the journal's rows
                recorded.append(job.record("a", NOTE="worker's"))
            return real(conn, columns, keys)  # type: ignore[arg-type]

        monkeypatch.setattr(_reads, "rows_by_key", meanwhile)
        report = csvjournal.merge_csv(csv_path)
        assert recorded
        assert (report.updated, report.newer_kept) == (["b"], ["a"])
        assert (job.get("a")["NOTE"], job.get("b")["NOTE"]) == ("worker's", "y2")  # type: ignore[index]


def test_a_row_a_worker_adds_under_the_other_spelling_while_a_merge_plans_is_merged_into(
    csv_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # with the formula guard, the sheet's new row '=A is the row =A or the row '=A; a worker
    # records the row '=A after the merge planned to add =A: the merge takes that row
    csv_path.write_text("ID,NOTE\nb,x\n", encoding="utf-8")
    with csvjournal.open(csv_path, key="ID", formula_guard=True) as job:
        job.flush(timeout=10)
        csv_path.write_text(
            csv_path.read_text(encoding="utf-8") + "'=A,from sheet,PENDING,\n", encoding="utf-8"
        )
        real = merge.plan_rows

        def planned_then_a_worker(*args: object, **kwargs: object) -> object:
            plan = real(*args, **kwargs)  # type: ignore[arg-type]
            job.record("'=A", NOTE="worker")
            return plan

        monkeypatch.setattr(merge, "plan_rows", planned_then_a_worker)
        report = csvjournal.merge_csv(csv_path)
        assert (report.added, report.newer_kept) == ([], ["'=A"])
        assert job.get("'=A")["NOTE"] == "worker"  # type: ignore[index]
        assert job.get("=A") is None
