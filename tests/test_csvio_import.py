"""CSV import: bad input refused with file, line and column named; status columns added;
the dialect detected from the first records."""

from __future__ import annotations

import codecs
import re
import tempfile
import tracemalloc
from pathlib import Path

import pytest
from _csvio import STAMP, STATUS
from _csvio import csv_text as _csv_text
from _csvio import names as _names
from _csvio import parse as _parse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

import csvjournal
from csvjournal import csvio
from csvjournal.csvio import read_csv, render_csv

# -- 1. bad input ----------------------------------------------------------------------------

BAD_INPUT = [
    # (bytes, key, every line the message must name)
    pytest.param(b'k,v\n1,"a\nb"\n2,x\n1,c\n', "k", [5, 2], id="duplicate-keys"),
    pytest.param(b"k,v\r\n1,a\r\n,b\r\n", "k", [3], id="empty-key"),
    pytest.param(b"x,v\n1,a\n", "k", [1], id="missing-key-column"),
    pytest.param(b"k,v,v\n1,a,b\n", "k", [1, 1], id="duplicate-header-names"),
    pytest.param(b"k,,w\n1,a,b\n", "k", [1], id="empty-header-name"),
    pytest.param(b'k,v\n1,a\n2,"open\n3,b\n', "k", [3], id="unclosed-quote"),
    pytest.param(
        b'k,v\n1,a\n2,"open\n""x"" y\n3,b\n',
        "k",
        [3],
        id="unclosed-quote-with-escaped-quotes",
    ),
    pytest.param(b"k,v\n1,a\n2,x,y\n", "k", [3], id="too-many-fields"),
    pytest.param(b"k,v\n1,a\n2\n3,c\n", "k", [3], id="too-few-fields"),
    pytest.param(b'k,v\n1,"a\nb"\n2,x,y\n3,c\n', "k", [4], id="too-many-after-multiline"),
    pytest.param(b'k,v\r\n1,"a\r\nb\r\nc"\r\n2\r\n', "k", [5], id="too-few-after-multiline"),
    pytest.param(b"", "k", [1], id="empty-file"),
    pytest.param(codecs.BOM_UTF8 + b"\r\n", "k", [1], id="only-a-bom-and-a-line-break"),
    pytest.param(b"k,v\n1,a\n\n3,c\n", "k", [3], id="blank-line"),
    pytest.param(b'k,v\r\n1,"a\r\nb"\r\n\r\n3,c\r\n', "k", [4], id="blank-line-after-multiline"),
    pytest.param(b"\nk,v\n1,a\n", "k", [1], id="blank-first-line"),
    pytest.param(codecs.BOM_UTF8 + b"\r\n\r\nk,v\r\n1,a\r\n", "k", [1], id="blank-lines-first"),
    pytest.param(b"\rk,v\r1,a\r", "k", [1], id="blank-first-line-cr"),
    # two Excel "CSV UTF-8" files joined by cat: the second's BOM and header mid-file
    pytest.param(
        codecs.BOM_UTF8 + b"k;v\r\n1;a\r\n" + codecs.BOM_UTF8 + b"k;v\r\n2;b\r\n",
        "k",
        [3],
        id="joined-files-bom",
    ),
]


@pytest.mark.parametrize(("data", "key", "lines"), BAD_INPUT)
def test_bad_input_is_refused_and_changes_nothing(
    tmp_path: Path, data: bytes, key: str, lines: list[int]
) -> None:
    path = tmp_path / "orders.csv"
    path.write_bytes(data)
    with pytest.raises(csvjournal.CsvFormatError) as caught:
        csvjournal.open(path, key=key)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, csvjournal.CsvJournalError)
    assert _names(tmp_path) == ["orders.csv"]  # no journal, -wal, -shm or backups folder
    assert path.read_bytes() == data
    message = str(caught.value)
    assert str(path) in message
    assert sorted(int(n) for n in re.findall(r"\bline (\d+)", message)) == sorted(lines)


BAD_COLUMNS = [
    # (bytes, "line L, column C" where the message must point)
    pytest.param(b'k,v\n1,"c"d\n', "line 2, column 6", id="text-after-a-closing-quote"),
    pytest.param(b'k,v\n1,"a\nb"x\n', "line 3, column 3", id="text-after-a-quote-line-later"),
    pytest.param(
        b'k,"V\nX",W,"V\nX"\n1,a,b,c\n', "line 2, column 6", id="duplicate-multiline-name"
    ),
    pytest.param(b"sep=;\nk;v\n1;a\n", "line 1, column 1", id="excel-sep-line"),
    pytest.param(b",k,w\n1,a,b\n", "line 1, column 1", id="empty-first-header-name"),
    pytest.param(
        b"k,,w\n1,a,b\n",
        "line 1, column 3",
        id="empty-header-name",
    ),
    pytest.param(
        b"k,v,v\n1,a,b\n",
        "line 1, column 5",
        id="duplicate-header-name",
    ),
    pytest.param(b'k,v\n1,a\n22,"open\n3,b\n', "line 3, column 4", id="unclosed-quote"),
    pytest.param(
        b'k,v\n1,a\n2,"open ""x""\n3,b\n',
        "line 3, column 3",
        id="unclosed-quote-with-escaped-quotes",
    ),
    pytest.param(
        b'k,v\n1,"a\nb"\n22,x,yy\n',
        "line 4, column 6",
        id="too-many-fields",
    ),
    pytest.param(b'k,v\n1,"a\nb"\n22\n', "line 4, column 3", id="too-few-fields"),
    pytest.param(b"k,v\n1,a\n\n3,c\n", "line 3, column 1", id="blank-line"),
    pytest.param(b"\nk,v\n1,a\n", "line 1, column 1", id="blank-first-line"),
    pytest.param(
        codecs.BOM_UTF8 + b'k,v\n1,"a\nb"\n' + codecs.BOM_UTF8 + b"k,v\n",
        "line 4, column 1",
        id="joined-files-bom-after-multiline",
    ),
    pytest.param(
        "k\tv\r1\ta\r".encode("utf-16") + "k\tv\r".encode("utf-16"),
        "line 3, column 1",
        id="joined-files-bom-utf16-cr",
    ),
    # a quote inside a field (not at its start) is data: the field count is still found
    pytest.param(b'k,v\n5" pipe\n1,2\n\n3,4\n', "line 2, column 8", id="too-few-with-a-quote"),
    pytest.param(b'k,v\n1,5" x,y\n', "line 2, column 8", id="too-many-with-a-quote"),
    # the first error in the file is the one named, whatever its kind
    pytest.param(b'k,v\n1,x,extra\n2,"open\n', "line 2, column 5", id="ragged-before-unclosed"),
    pytest.param(
        "k,v\n1,a\n2,«é»\n".encode() + b"3,caf\xe9\n", "line 4, column 6", id="undecodable"
    ),
    # lines end as the csv reader ends them: CRLF, LF or a lone CR
    pytest.param(b"k,v\r1,a\r2,caf\xe9\r", "line 3, column 6", id="undecodable-cr"),
    pytest.param(b"k,v\r\n1,a\r\n2,caf\xe9\r\n", "line 3, column 6", id="undecodable-crlf"),
    pytest.param(b'k,v\r1,"a\rb"\r\n2,\xe9\r', "line 4, column 3", id="undecodable-mixed"),
    pytest.param(
        codecs.BOM_UTF16_LE + "k,v\r1,a\r2,caf".encode("utf-16-le") + b"\x00\xd8\r\x00",
        "line 3, column 6",
        id="undecodable-utf16-cr",
    ),
]


@pytest.mark.parametrize(("data", "where"), BAD_COLUMNS)
def test_bad_input_names_the_column(tmp_path: Path, data: bytes, where: str) -> None:
    path = tmp_path / "orders.csv"
    path.write_bytes(data)
    with pytest.raises(csvjournal.CsvFormatError, match=re.escape(f"{path}: {where}:")):
        csvjournal.open(path, key="k")


def test_a_byte_order_mark_starting_a_line_inside_a_quoted_cell_is_data(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_bytes('k,v\n1,"a\n\ufeffb"\n2,c\n'.encode())
    with csvjournal.open(path, key="k", export=False) as journal:
        assert journal.get("1") == {"k": "1", "v": "a\n\ufeffb", "STATUS": "PENDING"} | {
            "LAST_PROCESSED": ""
        }
        assert journal.pending() == ["1", "2"]


def test_key_errors_name_the_key_column(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_bytes(b"v,PO NUMBER\na,1\nb,\n")
    with pytest.raises(
        csvjournal.CsvFormatError, match=r"line 3, column 3: empty key \('PO NUMBER'\)"
    ):
        csvjournal.open(path, key="PO NUMBER")
    path.write_bytes(b"v,PO NUMBER\na,1\nb,1\n")
    with pytest.raises(
        csvjournal.CsvFormatError,
        match=r"line 3, column 3: duplicate key '1' in 'PO NUMBER' \(first on line 2\)",
    ):
        csvjournal.open(path, key="PO NUMBER")
    # a record whose key comes after a quoted line break: the line the key is on
    path.write_bytes(b'v,PO NUMBER\na,1\n"two\nlines",1\n')
    with pytest.raises(csvjournal.CsvFormatError, match=r"line 4, column 8: duplicate key '1'"):
        csvjournal.open(path, key="PO NUMBER")
    path.write_bytes(b"v,PO NUMBER\na,1\n")
    with pytest.raises(csvjournal.CsvFormatError, match=r"no key column 'PO_NUMBER'"):
        csvjournal.open(path, key="PO_NUMBER")
    assert _names(tmp_path) == ["orders.csv"]


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (b"k,,w\n1,a,b\n", "line 1, column 3: empty header name"),
        (b"k;v;;\r\n1;a;;\r\n", "line 1, column 5: empty header name: the header ends in empty"),
        (b"k,v\n1,a\n\n", "line 3, column 1: blank line (a CSV has none: delete it)"),
    ],
    ids=["inner-empty-name", "excel-trailing-empty-columns", "trailing-blank-line"],
)
def test_empty_names_and_blank_lines_say_what_to_do(tmp_path: Path, data: bytes, said: str) -> None:
    path = tmp_path / "orders.csv"
    path.write_bytes(data)
    with pytest.raises(csvjournal.CsvFormatError) as caught:
        csvjournal.open(path, key="k")
    assert said in str(caught.value)
    if "ends in empty" not in said:
        assert "ends in empty" not in str(caught.value)


@pytest.mark.parametrize(
    ("header", "key", "said"),
    [
        ("po_number,B", "PO_NUMBER", "('po_number', 'B'); did you mean 'po_number'?"),
        ("\ufeff\ufeffPO Number ,B", "PO Number", "('\\ufeffPO Number ', 'B'); did you mean"),
        ("Po Number ,B", "PO Number", "did you mean 'Po Number '?"),
        ("A,B", "ID", "('A', 'B')"),
        (",".join(f"c{n}" for n in range(12)), "ID", "'c9' and 2 more)"),
    ],
)
def test_a_missing_key_column_shows_the_header_and_a_near_miss(
    tmp_path: Path, header: str, key: str, said: str
) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(f"{header}\n" + ",".join("1" * len(header.split(","))) + "\n")
    with pytest.raises(csvjournal.CsvFormatError) as caught:
        csvjournal.open(path, key=key)
    assert f"no key column {key!r} in the header (" in str(caught.value)
    assert said in str(caught.value)
    if "did you mean" not in said:
        assert "did you mean" not in str(caught.value)


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1"])
def test_a_utf8_file_read_in_another_encoding_is_named_utf8(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "orders.csv"
    path.write_bytes(b"\xef\xbb\xbfk,v\n1,a\n")
    with pytest.raises(csvjournal.CsvFormatError, match=r"it is UTF-8 \(give no encoding\)"):
        csvjournal.open(path, key="k", encoding=encoding)


@pytest.mark.parametrize(
    ("header", "said"),
    [
        ("ID, NAME, STATUS", "line 1, column 10: header name ' STATUS' is 'STATUS' with spaces"),
        ("ID,LAST_PROCESSED ", "column 4: header name 'LAST_PROCESSED ' is 'LAST_PROCESSED'"),
    ],
)
def test_a_status_column_written_with_spaces_is_refused_not_added_twice(
    tmp_path: Path, header: str, said: str
) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(f"{header}\n" + ",".join("1" * len(header.split(","))) + "\n")
    before = path.read_bytes()
    with pytest.raises(csvjournal.CsvFormatError, match=re.escape(said)):
        csvjournal.open(path, key="ID")
    assert sorted(tmp_path.iterdir()) == [path]
    assert path.read_bytes() == before
    # beside the status column itself, such a name is a column of its own
    path.write_text("ID,STATUS, STATUS\n1,,x\n")
    with csvjournal.open(path, key="ID") as journal:
        assert journal.get("1") == {"ID": "1", "STATUS": "", " STATUS": "x", "LAST_PROCESSED": ""}


def test_single_quotes_in_a_plain_csv_are_data(tmp_path: Path) -> None:
    path = tmp_path / "notes.csv"
    original = b"ID,NOTE,STATUS,LAST_PROCESSED\n1,'urgent',PENDING,\n"
    path.write_bytes(original)
    with csvjournal.open(path, key="ID") as journal:
        assert journal.get("1")["NOTE"] == "'urgent'"  # type: ignore[index]
    assert path.read_bytes() == original


# -- 2. statuses at import -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "columns"),
    [
        (["PO_NUMBER", "SUPPLIER"], ["PO_NUMBER", "SUPPLIER", STATUS, STAMP]),
        (["SUPPLIER", STAMP, "PO_NUMBER"], ["SUPPLIER", STAMP, "PO_NUMBER", STATUS]),
        ([STATUS, "PO_NUMBER", "SUPPLIER"], [STATUS, "PO_NUMBER", "SUPPLIER", STAMP]),
    ],
)
def test_missing_status_and_timestamp_columns_are_appended(
    tmp_path: Path, header: list[str], columns: list[str]
) -> None:
    path = tmp_path / "orders.csv"
    rows = [{"PO_NUMBER": "A", "SUPPLIER": "x", STATUS: "", STAMP: ""}, {"PO_NUMBER": "B"}]
    path.write_bytes(
        _csv_text(header, [[row.get(name, "") for name in header] for row in rows]).encode()
    )
    # an appended status column shows PENDING; an empty status cell stays empty
    shown = "" if STATUS in header else "PENDING"
    with csvjournal.open(path, key="PO_NUMBER") as journal:
        assert journal.columns == columns
        assert journal.get("A") == {"PO_NUMBER": "A", "SUPPLIER": "x", STATUS: shown, STAMP: ""}
        assert journal.pending() == ["A", "B"]
        assert journal.counts() == {"PENDING": 2}
    expected = [{"PO_NUMBER": "A", "SUPPLIER": "x"}, {"PO_NUMBER": "B", "SUPPLIER": ""}]
    assert _parse(path.read_bytes()) == [
        columns,
        *[[{**row, STATUS: shown, STAMP: ""}[name] for name in columns] for row in expected],
    ]


def test_empty_statuses_count_as_pending_and_pending_keeps_csv_order(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    header = ["PO_NUMBER", STATUS, "NOTE"]
    rows = [
        ["Z", "COMPLETED", ""],
        ["B", "", "n"],
        ["Y", "FAILED", ""],
        ["A", "", ""],
        ["X", "IN_PROGRESS", ""],  # no lease: pending
        ["C", "NO_ATTACHMENTS", ""],
    ]
    path.write_bytes(_csv_text(header, rows).encode())
    with csvjournal.open(path, key="PO_NUMBER") as journal:
        assert journal.pending() == ["B", "Y", "A", "X", "C"]
        assert journal.counts() == {
            "COMPLETED": 1,
            "PENDING": 2,
            "FAILED": 1,
            "IN_PROGRESS": 1,
            "NO_ATTACHMENTS": 1,
        }
        assert journal.get("B") == {"PO_NUMBER": "B", STATUS: "", "NOTE": "n", STAMP: ""}
        assert journal.get("Z")[STATUS] == "COMPLETED"  # type: ignore[index]
    with csvjournal.open(path, terminal={"COMPLETED", "NO_ATTACHMENTS", "FAILED"}) as journal:
        assert journal.pending() == ["B", "A", "X"]
    kept = [[key, status, note, ""] for key, status, note in rows]
    assert _parse(path.read_bytes()) == [[*header, STAMP], *kept]


@pytest.mark.parametrize("terminator", ["\n", "\r\n"])
@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_an_empty_status_cell_stays_empty_until_a_status_is_recorded(
    tmp_path: Path, delimiter: str, terminator: str
) -> None:
    path = tmp_path / "orders.csv"
    header = ["ID", "NAME", STATUS, STAMP]
    rows = [["1", "", "", ""], ["2", "b", "", ""], ["3", "", "FAILED", ""]]
    original = _csv_text(header, rows, delimiter=delimiter, terminator=terminator).encode()
    path.write_bytes(original)
    with csvjournal.open(path, key="ID") as journal:
        assert journal.counts() == {"PENDING": 2, "FAILED": 1}
        assert journal.pending() == ["1", "2", "3"]
    assert path.read_bytes() == original  # not "1,,PENDING,"

    with csvjournal.open(path) as journal:
        journal.record("1", NAME="a")  # no status given: the cell stays as it is
        journal.record("2", "COMPLETED")
        journal.flush()
        stamps = [journal.get(key)[STAMP] for key in "12"]  # type: ignore[index]
        assert _parse(path.read_bytes(), delimiter=delimiter) == [
            header,
            ["1", "a", "", stamps[0]],
            ["2", "b", "COMPLETED", stamps[1]],
            rows[2],
        ]
        assert journal.pending() == ["1", "3"]
        assert journal.claim() == ["1"]
        assert journal.get("1")[STATUS] == "IN_PROGRESS"  # type: ignore[index]
    # given back at close: now a recorded status
    assert [row[2] for row in _parse(path.read_bytes(), delimiter=delimiter)[1:]] == [
        "PENDING",
        "COMPLETED",
        "FAILED",
    ]


# -- 3. dialect detection ----------------------------------------------------------------------

SNIFFED = [
    # (bytes, delimiter, quote character, the rows as read)
    pytest.param(
        b"ID;Menge, Stk;Preis, EUR\n1;3;4,50\n", ";", '"', [["1", "3", "4,50"]], id="semicolon"
    ),
    pytest.param(
        b"ID\tName, first\tCity, State\n1\tA\tB\n", "\t", '"', [["1", "A", "B"]], id="tab"
    ),
    pytest.param(b"ID|a;b|c,d\n1|x|y,z\n", "|", '"', [["1", "x", "y,z"]], id="pipe"),
    pytest.param(  # the header alone says ";", the records say ","
        b"A,B;C;D\n1,2\n3,4\n", ",", '"', [["1", "2"], ["3", "4"]], id="records-decide"
    ),
    pytest.param(b'ID;NOTE\n1;"a;b"\n2;x,y\n', ";", '"', [["1", "a;b"], ["2", "x,y"]], id="quoted"),
    pytest.param(b"A;B,C\n", ",", '"', [], id="header-only-tie-goes-to-comma"),
    pytest.param(
        b"ID,NOTE\n1,'a, b'\n2,plain\n", ",", "'", [["1", "a, b"], ["2", "plain"]], id="single"
    ),
    pytest.param(
        b"ID;NOTE\r\n1;'two\r\nlines'\r\n", ";", "'", [["1", "two\r\nlines"]], id="single-lines"
    ),
    pytest.param(  # quotes that need not be there are data: the file may mean them
        b"ID,NOTE\n1,'urgent'\n", ",", '"', [["1", "'urgent'"]], id="single-unneeded"
    ),
    pytest.param(  # "," splits the records consistently into 3 fields: ambiguous
        b"ID,NOTE,X\n1,'a,b'\n", ",", '"', [["1", "'a", "b'"]], id="single-ambiguous"
    ),
]


@pytest.mark.parametrize(("data", "delimiter", "quote", "rows"), SNIFFED)
def test_the_dialect_is_detected_from_the_first_records(
    tmp_path: Path, data: bytes, delimiter: str, quote: str, rows: list[list[str]]
) -> None:
    path = tmp_path / "orders.csv"
    path.write_bytes(data)
    parsed = read_csv(path)
    assert (parsed.dialect.delimiter, parsed.dialect.quotechar) == (delimiter, quote)
    assert parsed.rows == rows
    assert render_csv(parsed.header, parsed.rows, parsed.dialect) == data


@pytest.mark.parametrize(
    ("data", "key", "delimiter", "header"),
    [
        (b"Key;Amount, EUR\nA;1,50\nB;2,25\n", "Key", ";", ["Key", "Amount, EUR"]),
        (b"ID\tName, first\n1001\tDoe, John\n", "ID", "\t", ["ID", "Name, first"]),
        (b"Customer, ID\tName\n1001, A\tDoe\n", "Name", "\t", ["Customer, ID", "Name"]),
        (b"A;B,C\n1;2,3\n", "A;B", ",", ["A;B", "C"]),  # the key says "," too
        (b"A;B,C\n1;2,3\n", "Z", ",", ["A;B", "C"]),  # no header has it: the tie's rule
    ],
)
def test_the_key_column_decides_between_delimiters_that_read_the_file_alike(
    tmp_path: Path, data: bytes, key: str, delimiter: str, header: list[str]
) -> None:
    path = tmp_path / "orders.csv"
    path.write_bytes(data)
    parsed = read_csv(path, key=key)
    assert (parsed.dialect.delimiter, parsed.header) == (delimiter, header)
    if key in header:  # and an import takes it so, exporting in that delimiter alone
        with csvjournal.open(path, key=key) as journal:
            journal.record(journal.pending()[0], "DONE")
        assert all(
            line.count(delimiter) == len(header) + 1 for line in path.read_text().splitlines()
        )


def test_a_double_quote_anywhere_rules_out_the_single_quote(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    data = b"ID,NOTE\n1,'a,b'\n2,say \"hi\"\n"
    path.write_bytes(data)
    with pytest.raises(csvjournal.CsvFormatError, match="line 2, column 6: 3 fields where"):
        csvjournal.open(path, key="ID")
    assert path.read_bytes() == data
    assert _names(tmp_path) == ["orders.csv"]


def test_only_the_first_records_are_sampled(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    # ";" gives 3 fields, "," 2; a bad row past the sample is named in the sampled dialect
    # (sampled too, it would make "," the only consistent delimiter, and the file "valid")
    rows = [[str(n), f"{n},5", "x"] for n in range(30)]
    rows[25].append("9")
    path.write_bytes(_csv_text(["ID", "PREIS, EUR", "X"], rows, delimiter=";").encode())
    with pytest.raises(csvjournal.CsvFormatError, match="line 27, column 11: 4 fields where"):
        read_csv(path)


def test_a_record_cut_off_by_the_sampled_prefix_is_not_counted(tmp_path: Path) -> None:
    # Records of 5,000 characters: the first 64 KiB end inside one; counted, its 2 fields
    # would make ";" inconsistent, and the header alone says "," (3 of them against 2).
    path = tmp_path / "orders.csv"
    header = ["ID", "A, B", "C, D, E"]
    rows = [[str(n), "x" * 5000, "v"] for n in range(30)]
    path.write_bytes(_csv_text(header, rows, delimiter=";").encode())
    parsed = read_csv(path)
    assert parsed.dialect.delimiter == ";"
    assert (parsed.header, parsed.rows) == (header, rows)


def test_a_single_quoted_sheet_round_trips_and_is_exported_in_its_quoting(
    tmp_path: Path,
) -> None:
    path = tmp_path / "orders.csv"
    header = ["ID", "NOTE", STATUS, STAMP]
    rows = [["1", "a, b", "PENDING", ""], ["2", "two\nlines", "FAILED", ""]]
    original = _csv_text(header, rows, quote="'").encode()
    assert b"'a, b'" in original
    path.write_bytes(original)
    with csvjournal.open(path, key="ID") as journal:
        assert journal.get("1") == dict(zip(header, rows[0], strict=True))
    assert path.read_bytes() == original
    with csvjournal.open(path) as journal:
        journal.record("3", NOTE="O'Brien, Jr.")
        stamp = journal.get("3")[STAMP]  # type: ignore[index]
    data = path.read_bytes()
    assert data.startswith(original)
    assert data[len(original) :] == f"3,'O''Brien, Jr.',PENDING,{stamp}\n".encode()
    assert _parse(data, quote="'")[1:] == [*rows, ["3", "O'Brien, Jr.", "PENDING", stamp]]


# Cells for single-quoted tables: anything but the double quote (which would rule out the
# single quote); header names without a delimiter or a quote.
_sq_cells = st.lists(
    st.sampled_from(["'", ",", ";", "\t", "|", "\n", "\r\n", " ", "é"])
    | st.text(st.characters(exclude_categories=["Cs"], exclude_characters='"'), max_size=3),
    max_size=4,
).map("".join)
_sq_names = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\"',;\t|\r\n\ufeff"),
    min_size=1,
    max_size=6,
).filter(lambda name: name not in {STATUS, STAMP})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    names=st.lists(_sq_names, min_size=1, max_size=3, unique=True),
    cells=st.lists(st.lists(_sq_cells, min_size=5, max_size=5), max_size=4),
    delimiter=st.sampled_from([",", ";", "\t", "|"]),
    terminator=st.sampled_from(["\n", "\r\n"]),
)
def test_single_quoted_tables_round_trip(
    names: list[str], cells: list[list[str]], delimiter: str, terminator: str
) -> None:
    header = [*names, STATUS, STAMP]
    width = len(header)
    # The first row needs its quotes (a delimiter in a field) and holds no line break, so
    # that the double quote cannot read the table consistently: the evidence is there.
    first = ["k0", f"a{delimiter}b", *["x"] * (width - 2)]
    rows = [first, *[[f"k{n + 1}", *row[: width - 1]] for n, row in enumerate(cells)]]
    data = _csv_text(header, rows, delimiter=delimiter, terminator=terminator, quote="'")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "table.csv"
        path.write_bytes(data.encode())
        parsed = read_csv(path)
        assert (parsed.dialect.delimiter, parsed.dialect.quotechar) == (delimiter, "'")
        assert (parsed.header, parsed.rows) == (header, rows)
        csvjournal.open(path, key=names[0]).close()
        assert path.read_bytes() == data.encode()


# -- encodings named by hand ------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "raw"),
    [
        ("utf-16", "utf-16-le"),  # no BOM: Python reads "utf-16" as little-endian
        ("utf-8-sig", "utf-8"),
        ("utf-32", "utf-32-le"),
    ],
)
def test_a_bom_codec_named_for_a_file_without_bom_writes_no_bom_per_record(
    tmp_path: Path, encoding: str, raw: str
) -> None:
    path = tmp_path / "sheet.csv"
    data = "ID,NAME,STATUS,LAST_PROCESSED\n1,a,PENDING,\n2,b,PENDING,\n".encode(raw)
    path.write_bytes(data)
    with csvjournal.open(path, key="ID", encoding=encoding):
        pass
    assert path.read_bytes() == data  # no BOM came in: one per record would change every key
    with csvjournal.open(path) as journal:
        journal.record("2", "COMPLETED")
    text = path.read_bytes().decode(raw)
    assert "\ufeff" not in text
    assert [line.split(",")[0] for line in text.splitlines()] == ["ID", "1", "2"]


@pytest.mark.parametrize("raw", ["utf-16-le", "utf-16-be"])
@pytest.mark.parametrize("text", ["ID,NAME\n1,a\n", "ID;NAME\r\n1;é\r\n2;b\r\n"])
def test_utf16_without_bom_is_named_as_the_encoding_to_give(
    tmp_path: Path, raw: str, text: str
) -> None:
    path = tmp_path / "sheet.csv"
    path.write_bytes(text.encode(raw))
    hint = f"line 1, column 1: the file looks like {raw.upper()} without a byte-order mark"
    with pytest.raises(csvjournal.CsvFormatError, match=f"{re.escape(hint)}.*encoding='{raw}'"):
        csvjournal.open(path, key="ID")
    hint += ", read as utf-8"  # named by hand: its NULs were text, a field count was blamed
    with pytest.raises(csvjournal.CsvFormatError, match=f"{re.escape(hint)}.*encoding='{raw}'"):
        csvjournal.open(path, key="ID", encoding="utf-8")
    assert _names(tmp_path) == ["sheet.csv"]
    with csvjournal.open(path, key="ID", encoding=raw) as journal:
        journal.record("1", "COMPLETED")
    assert path.read_bytes().decode(raw).splitlines()[1].startswith("1")


@pytest.mark.parametrize(
    ("raw", "given"),
    [
        *[
            (raw, given)
            for raw in ("utf-16-le", "utf-16-be", "utf-32-le")
            for given in ("cp1252", "latin-1", "utf-8")
        ],
        ("utf-32-le", "utf-16"),
        ("utf-32-be", "utf-16-be"),
        ("utf-16-le", "utf-32"),
    ],
)
def test_a_wide_bom_read_in_another_encoding_names_the_files_encoding(
    tmp_path: Path, raw: str, given: str
) -> None:
    # Its NULs were read as text: the error blamed a field count on a line that is not there.
    path = tmp_path / "sheet.csv"
    path.write_bytes("\ufeffID,NAME\n1,café\n".encode(raw))
    hint = f"line 1, column 1: the file starts with {raw.upper()}'s byte-order mark"
    with pytest.raises(csvjournal.CsvFormatError, match=f"{re.escape(hint)}.*it is {raw.upper()}"):
        csvjournal.open(path, key="ID", encoding=given)
    assert _names(tmp_path) == ["sheet.csv"]
    with csvjournal.open(path, key="ID") as journal:  # as the error says: no encoding
        assert journal.get("1")["NAME"] == "café"


def test_a_nul_byte_in_a_utf8_cell_is_no_utf16_hint(tmp_path: Path) -> None:
    path = tmp_path / "sheet.csv"
    path.write_bytes(b"ID,NAME\n1,a\x00b\n")
    with csvjournal.open(path, key="ID", export=False) as journal:
        assert journal.get("1") == {"ID": "1", "NAME": "a\x00b", STATUS: "PENDING", STAMP: ""}


@pytest.mark.parametrize(
    ("encoding", "data", "where"),
    [
        ("utf-7", b"ID,N\n1,a\n2,x+2AA-y\n", "line 3, column 4"),
        ("utf-7", b"ID,N\r\n1,+2AA-\r\n", "line 2, column 3"),
    ],
)
def test_a_lone_surrogate_decoded_from_the_bytes_is_refused_where_it_is(
    tmp_path: Path, encoding: str, data: bytes, where: str
) -> None:
    # It could be imported, but never written back: every export would fail.
    path = tmp_path / "sheet.csv"
    path.write_bytes(data)
    with pytest.raises(csvjournal.CsvFormatError, match=f"{re.escape(where)}: .*lone surrogate"):
        csvjournal.open(path, key="ID", encoding=encoding)
    assert _names(tmp_path) == ["sheet.csv"]


def test_a_named_encoding_wins_over_bytes_that_look_like_another_ones_bom(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sheet.csv"
    data = "ÿþID,NAME\n1,é\n".encode("cp1252")  # begins with the bytes of UTF-16 LE's BOM
    path.write_bytes(data)
    with csvjournal.open(path, key="ÿþID", encoding="cp1252", export=False) as journal:
        assert journal.get("1") == {"ÿþID": "1", "NAME": "é", STATUS: "PENDING", STAMP: ""}


def test_a_utf_32_file_with_its_bom_is_read_as_utf_32(tmp_path: Path) -> None:
    path = tmp_path / "sheet.csv"
    path.write_bytes(codecs.BOM_UTF32_LE + "ID,V\n1,x\n".encode("utf-32-le"))
    for encoding in (None, "utf-32"):
        with csvjournal.open(path, key="ID", encoding=encoding, export=False) as journal:
            assert journal.get("1") == {"ID": "1", "V": "x", STATUS: "PENDING", STAMP: ""}
        Path(f"{path}.journal").unlink()


def test_a_journal_made_without_a_csv_writes_in_the_encoding_named(tmp_path: Path) -> None:
    path = tmp_path / "new.csv"
    with csvjournal.open(path, key="ID", encoding="cp1252") as journal:
        journal.record("1", "COMPLETED", PRICE="5 €")
    assert "5 €" in path.read_bytes().decode("cp1252")


# -- 4. big files ------------------------------------------------------------------------------


def test_an_import_holds_the_file_once_not_a_table_of_it(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with path.open("w", newline="") as file:
        file.write("PO_NUMBER," + ",".join(f"col{i}" for i in range(9)) + "\n")
        for i in range(40_000):
            file.write(f"PO-{i:07d}," + ",".join(f"value {i % 97} of {j}" for j in range(9)))
            file.write("\n")
    size = path.stat().st_size
    tracemalloc.start()
    try:
        with csvjournal.open(path, key="PO_NUMBER", export=False, keep_backups=0) as journal:
            _, peak = tracemalloc.get_traced_memory()
            assert len(journal) == 40_000
    finally:
        tracemalloc.stop()
    # The bytes and their text (2x), the keys seen (1x); the rows as Python lists were 12x.
    assert peak < 3.5 * size, f"{peak / size:.1f}x the file"


def test_a_cell_beyond_excels_limit_is_logged_once_at_import(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    big = "x" * (csvio.EXCEL_MAX_CELL + 1)
    near = "y" * (csvio.EXCEL_MAX_CELL - 1)  # a row longer than the limit, no cell beyond it
    path.write_text(f"ID,A,B\n1,{near},{near}\n2,{big},b\n3,{big},c\n", encoding="utf-8")
    with capture_logs() as logs, csvjournal.open(path, key="ID", export=False) as journal:
        assert journal.get("2")["A"] == big  # type: ignore[index]  # kept as it is
    warnings = [entry for entry in logs if entry["event"] == "excel_cell_limit_exceeded"]
    assert warnings == [
        {"event": "excel_cell_limit_exceeded", "log_level": "warning", "path": str(path), "line": 3}
    ]


def test_a_recorded_cell_beyond_excels_limit_is_logged_once(tmp_path: Path) -> None:
    with (
        capture_logs() as logs,
        csvjournal.open(tmp_path / "orders.csv", key="ID", export=False) as journal,
    ):
        journal.record("1", A="x" * csvio.EXCEL_MAX_CELL)  # at the limit: fine
        journal.record("2", A="x" * (csvio.EXCEL_MAX_CELL + 1))
        journal.record("3", A="x" * (csvio.EXCEL_MAX_CELL + 1))
    keys = [entry["key"] for entry in logs if entry["event"] == "excel_cell_limit_exceeded"]
    assert keys == ["2"]
