"""CSV import: bad input refused with file, line and column named; status columns added."""

from __future__ import annotations

import codecs
import re
from pathlib import Path

import pytest
from _csvio import STAMP, STATUS
from _csvio import csv_text as _csv_text
from _csvio import names as _names
from _csvio import parse as _parse

import csvjournal

# -- 1. bad input ----------------------------------------------------------------------------

BAD_INPUT = [
    # (bytes, key, every line the message must name)
    pytest.param(b'k,v\n1,"a\nb"\n2,x\n1,c\n', "k", [5, 2], id="duplicate-keys"),
    pytest.param(b"k,v\r\n1,a\r\n,b\r\n", "k", [3], id="empty-key"),
    pytest.param(b"x,v\n1,a\n", "k", [1], id="missing-key-column"),
    pytest.param(b"k,v,v\n1,a,b\n", "k", [1], id="duplicate-header-names"),
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
    pytest.param(
        "k,v\n1,a\n2,«é»\n".encode() + b"3,caf\xe9\n", "line 4, column 6", id="undecodable"
    ),
]


@pytest.mark.parametrize(("data", "where"), BAD_COLUMNS)
def test_bad_input_names_the_column(tmp_path: Path, data: bytes, where: str) -> None:
    path = tmp_path / "orders.csv"
    path.write_bytes(data)
    with pytest.raises(csvjournal.CsvFormatError, match=re.escape(f"{path}: {where}:")):
        csvjournal.open(path, key="k")


def test_key_errors_name_the_key_column(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_bytes(b"v,PO NUMBER\na,1\nb,\n")
    with pytest.raises(csvjournal.CsvFormatError, match=r"line 3, column 'PO NUMBER': empty key"):
        csvjournal.open(path, key="PO NUMBER")
    path.write_bytes(b"v,PO NUMBER\na,1\nb,1\n")
    with pytest.raises(csvjournal.CsvFormatError, match=r"line 3.*'1'.*line 2"):
        csvjournal.open(path, key="PO NUMBER")
    path.write_bytes(b"v,PO NUMBER\na,1\n")
    with pytest.raises(csvjournal.CsvFormatError, match=r"no key column 'PO_NUMBER'"):
        csvjournal.open(path, key="PO_NUMBER")
    assert _names(tmp_path) == ["orders.csv"]


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
    with csvjournal.open(path, key="PO_NUMBER") as journal:
        assert journal.columns == columns
        assert journal.get("A") == {"PO_NUMBER": "A", "SUPPLIER": "x", STATUS: "PENDING", STAMP: ""}
        assert journal.pending() == ["A", "B"]
    expected = [{"PO_NUMBER": "A", "SUPPLIER": "x"}, {"PO_NUMBER": "B", "SUPPLIER": ""}]
    assert _parse(path.read_bytes()) == [
        columns,
        *[[{**row, STATUS: "PENDING", STAMP: ""}[name] for name in columns] for row in expected],
    ]


def test_empty_statuses_become_pending_and_pending_keeps_csv_order(tmp_path: Path) -> None:
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
        assert journal.get("B") == {"PO_NUMBER": "B", STATUS: "PENDING", "NOTE": "n", STAMP: ""}
        assert journal.get("Z")[STATUS] == "COMPLETED"  # type: ignore[index]
    with csvjournal.open(path, terminal={"COMPLETED", "NO_ATTACHMENTS", "FAILED"}) as journal:
        assert journal.pending() == ["B", "A", "X"]
    filled = [[key, status or "PENDING", note, ""] for key, status, note in rows]
    assert _parse(path.read_bytes()) == [[*header, STAMP], *filled]
