"""The CSV side: dialect kept byte for byte, values as text, encodings, formula guard.

Everything goes through the public behaviour: ``csvjournal.open`` / ``Journal`` and
``csvio.read_csv`` / ``csvio.render_csv``; files are written and read back as bytes. What
import refuses and the status columns it adds are in test_csvio_import.py.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from _csvio import STAMP, STATUS
from _csvio import csv_text as _csv_text
from _csvio import names as _names
from _csvio import parse as _parse
from _csvio import record_text as _record
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import csvjournal
from csvjournal.cli import cli
from csvjournal.csvio import guard_formula, guard_twin, read_csv, render_csv, unguard_formula
from csvjournal.progress import progress

# The shared corpora sit beside the repository: <parent>/main (or any clone) and
# <parent>/shared. They are read where they are, never copied into the repository.
SPECTRUM = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "csv-spectrum"
# A clone without them (a user's) skips their tests, saying where it looked; CI, which keeps
# them there, sets CSVJOURNAL_REQUIRE_CORPUS=1 so that a missing corpus fails instead.
_REQUIRED = os.environ.get("CSVJOURNAL_REQUIRE_CORPUS") == "1"
_MISSING = f"csv-spectrum corpus missing at {SPECTRUM}"
# Not written with minimal quoting (they quote empty fields): values round-trip, the bytes
# may change once.
NOT_MINIMAL = {"empty.csv", "empty_crlf.csv"}


# -- helpers ------------------------------------------------------------------------------


def _open_close(path: Path, **kwargs: object) -> None:
    csvjournal.open(path, **kwargs).close()  # type: ignore[arg-type]


# -- 1. csv-spectrum acid test ---------------------------------------------------------------


def _spectrum_cases() -> list[object]:
    files = sorted((SPECTRUM / "csvs").glob("*.csv"))
    if not files:  # never silently test nothing: a skip that says so, or (CI) a failure
        marks = () if _REQUIRED else (pytest.mark.skip(reason=_MISSING),)
        return [pytest.param(None, id="csv-spectrum-missing", marks=marks)]
    return [pytest.param(path, id=path.stem) for path in files]


def test_the_csv_spectrum_corpus_is_there() -> None:
    if not (SPECTRUM / "csvs").is_dir() and not _REQUIRED:
        pytest.skip(_MISSING)
    assert (SPECTRUM / "csvs").is_dir(), _MISSING
    stems = {path.stem for path in (SPECTRUM / "csvs").glob("*.csv")}
    assert len(stems) >= 11
    assert stems == {path.stem for path in (SPECTRUM / "json").glob("*.json")}


@pytest.mark.parametrize("source", _spectrum_cases())
def test_csv_spectrum_imports_exports_and_then_stays_byte_identical(
    tmp_path: Path, source: Path | None
) -> None:
    assert source is not None, _MISSING
    original = source.read_bytes()
    expected = json.loads((SPECTRUM / "json" / f"{source.stem}.json").read_text("utf-8"))
    header = _parse(original)[0]
    key = header[0]
    terminator = b"\r\n" if b"\r\n" in original else b"\n"

    # csvio alone: minimal-quoted files render back to exactly their bytes
    parsed = read_csv(source)
    assert parsed.header == header
    assert [dict(zip(header, row, strict=True)) for row in parsed.rows] == expected
    if source.name not in NOT_MINIMAL:
        assert render_csv(parsed.header, parsed.rows, parsed.dialect) == original

    path = tmp_path / source.name
    shutil.copyfile(source, path)
    with_status = [{**row, STATUS: "PENDING", STAMP: ""} for row in expected]
    with csvjournal.open(path, key=key) as journal:
        assert journal.columns == [*header, STATUS, STAMP]
        assert journal.to_dataframe().to_dict("records") == with_status
        assert [journal.get(row[key]) for row in expected] == with_status
        assert journal.pending() == [row[key] for row in expected]
    exported = path.read_bytes()
    records = _parse(exported)
    assert records[0] == [*header, STATUS, STAMP]
    assert [dict(zip(records[0], row, strict=True)) for row in records[1:]] == with_status
    assert exported.endswith(terminator) == original.endswith(b"\n")
    if terminator == b"\n":
        assert b"\r" not in exported
    else:
        assert exported.count(b"\n") == exported.count(b"\r\n") >= len(expected)

    # from now on, open and close change nothing: the same journal again...
    _open_close(path)
    assert path.read_bytes() == exported
    # ...and a new journal importing the exported file
    again = tmp_path / "again" / source.name
    again.parent.mkdir()
    again.write_bytes(exported)
    _open_close(again, key=key)
    assert again.read_bytes() == exported


# -- 2. round trip of random tables ------------------------------------------------------------

# Cell text: anything (quotes, every delimiter, CR, LF, unicode, spaces, empty) except the
# single quote, whose sniffing is tested on its own (test_csvio_import.py).
_cell_chars = st.characters(exclude_categories=["Cs"], exclude_characters="'")
_cell_pieces = st.sampled_from(['"', ",", ";", "\t", "|", "\n", "\r\n", "\r", " ", "é", "💥"])
_cells = st.lists(_cell_pieces | st.text(_cell_chars, max_size=4), max_size=5).map("".join)
# Header names never hold one of the four delimiters (so that no other candidate splits the
# records as consistently: the file would be ambiguous) nor a leading U+FEFF (a BOM).
_name_chars = st.characters(exclude_categories=["Cs"], exclude_characters=",;\t|'\ufeff")
_names_strategy = st.text(_name_chars, min_size=1, max_size=8)


@st.composite
def _tables(draw: st.DrawFn) -> tuple[list[str], str, list[list[str]]]:
    names = draw(
        st.lists(
            _names_strategy.filter(lambda n: n not in {STATUS, STAMP}),
            min_size=1,
            max_size=4,
            unique=True,
        )
    )
    key = names[0]
    header = draw(st.permutations([*names, STATUS, STAMP]))
    keys = draw(st.lists(_cells.filter(bool), max_size=5, unique=True))
    rows = []
    for key_value in keys:
        row = [draw(_cells) for _ in header]
        row[header.index(key)] = key_value
        row[header.index(STATUS)] = draw(_cells)  # empty too: import changes no value
        rows.append(row)
    return header, key, rows


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    table=_tables(),
    delimiter=st.sampled_from([",", ";", "\t", "|"]),
    terminator=st.sampled_from(["\n", "\r\n"]),
    bom=st.booleans(),
    final_newline=st.booleans(),
)
def test_open_and_close_give_back_the_same_bytes(
    table: tuple[list[str], str, list[list[str]]],
    delimiter: str,
    terminator: str,
    bom: bool,
    final_newline: bool,
) -> None:
    header, key, rows = table
    text = _csv_text(
        header, rows, delimiter=delimiter, terminator=terminator, final_newline=final_newline
    )
    if not any("\r" in value.replace("\r\n", "") for row in [header, *rows] for value in row):
        # the same file as Python's csv module writes it with minimal quoting
        written = io.StringIO(newline="")
        csv.writer(written, delimiter=delimiter, lineterminator=terminator).writerows(
            [header, *rows]
        )
        assert written.getvalue() == text + ("" if final_newline else terminator)
    data = (codecs.BOM_UTF8 if bom else b"") + text.encode("utf-8")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "table.csv"
        path.write_bytes(data)

        parsed = read_csv(path)
        assert (parsed.header, parsed.rows) == (header, rows)
        assert parsed.dialect.delimiter == delimiter
        assert parsed.dialect.bom == bom
        assert parsed.dialect.final_newline == final_newline
        assert render_csv(parsed.header, parsed.rows, parsed.dialect) == data

        with csvjournal.open(path, key=key) as journal:
            assert journal.columns == header
            for row in rows:
                assert journal.get(row[header.index(key)]) == dict(zip(header, row, strict=True))
        assert path.read_bytes() == data
        _open_close(path)
        assert path.read_bytes() == data


# -- 3. the purchase-order sheet -------------------------------------------------------------

PO_HEADER = [
    "PO_NUMBER",
    "STATUS",
    "SUPPLIER",
    "ATTACHMENTS_FOUND",
    "L1 UU Supplier Name",
    "LAST_PROCESSED",
    "ERROR_MESSAGE",
]
PO_ROWS = [
    ["4500012345", "PENDING", 'ACME "Global"; Ltd.', "", "Müller & Söhne GmbH", "", ""],
    [
        "4500012346",
        "FAILED",
        "Żabka Polska sp. z o.o.",
        "0",
        "Line one\r\nline two",
        "2026-11-27T10:00:00.000Z",
        'HTTP 500: "Internal; error"\nretry later',
    ],
    ["4500012347", "COMPLETED", "株式会社サンプル", "2", "O'Brien", "2026-11-27T10:05:00.000Z", ""],
    ["0004500012348", "NO_ATTACHMENTS", "Café ; Bar", "0", " padded ", "", "—"],
]


def _po_record(row: list[str]) -> bytes:
    return _record(row, ";", "\r\n").encode("utf-8")


def test_the_purchase_order_sheet_keeps_its_bytes_and_changes_only_the_recorded_row(
    tmp_path: Path,
) -> None:
    path = tmp_path / "orders.csv"
    head = codecs.BOM_UTF8 + _po_record(PO_HEADER)
    original = head + b"".join(_po_record(row) for row in PO_ROWS)
    path.write_bytes(original)

    with csvjournal.open(path, key="PO_NUMBER") as journal:
        assert journal.columns == PO_HEADER
        assert journal.get("4500012346") == dict(zip(PO_HEADER, PO_ROWS[1], strict=True))
    assert path.read_bytes() == original

    with csvjournal.open(path, key="PO_NUMBER", terminal={"COMPLETED"}) as journal:
        journal.record("4500012346", "COMPLETED", ATTACHMENTS_FOUND=3)
        recorded = journal.get("4500012346")
        assert recorded is not None
    stamp = recorded[STAMP]
    assert stamp.endswith("Z")
    assert dt.datetime.fromisoformat(stamp) > dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    changed = list(PO_ROWS[1])
    changed[PO_HEADER.index(STATUS)] = "COMPLETED"
    changed[PO_HEADER.index("ATTACHMENTS_FOUND")] = "3"
    changed[PO_HEADER.index(STAMP)] = stamp
    assert recorded == dict(zip(PO_HEADER, changed, strict=True))

    after = path.read_bytes()
    before_row = head + _po_record(PO_ROWS[0])
    after_row = _po_record(PO_ROWS[2]) + _po_record(PO_ROWS[3])
    assert after.startswith(before_row)  # BOM, header and the untouched rows before...
    assert after.endswith(after_row)  # ...and after, byte for byte
    assert after[len(before_row) : len(after) - len(after_row)] == _po_record(changed)
    assert _parse(after, delimiter=";") == [PO_HEADER, PO_ROWS[0], changed, *PO_ROWS[2:]]


# -- 4. no type guessing ---------------------------------------------------------------------

TYPED_LOOKING = ["00123", "NA", "TRUE", "1e5", "-0", " 7 "]
TYPED_HEADER = ["ID", "CODE", "FLAG", "EMPTY", STATUS, STAMP]
TYPED_ROWS = [
    [value, value, other, "", "NA" if i % 2 else "null", ""]
    for i, (value, other) in enumerate(
        zip(TYPED_LOOKING, ["nan", "None", "FALSE", "1,000", "0.10", "#N/A"], strict=True)
    )
]


def test_values_are_never_type_guessed(tmp_path: Path) -> None:
    path = tmp_path / "typed.csv"
    original = _csv_text(TYPED_HEADER, TYPED_ROWS).encode("utf-8")
    path.write_bytes(original)
    expected = [dict(zip(TYPED_HEADER, row, strict=True)) for row in TYPED_ROWS]
    with csvjournal.open(path, key="ID") as journal:
        assert [journal.get(value) for value in TYPED_LOOKING] == expected
        frame = journal.to_dataframe()
        assert frame.to_dict("records") == expected
        assert all(isinstance(v, str) for column in frame.columns for v in frame[column])
        assert journal.pending() == TYPED_LOOKING
    assert path.read_bytes() == original

    with csvjournal.open(path, key="ID") as journal:
        journal.record("00123", "COMPLETED", fields={"CODE": "007", "NEW": "-0"}, FLAG="1e5")
    records = _parse(path.read_bytes())
    assert records[0] == [*TYPED_HEADER, "NEW"]
    assert records[1][:4] == ["00123", "007", "1e5", ""]
    assert records[1][-1] == "-0"
    assert records[2:] == [[*row, ""] for row in TYPED_ROWS[1:]]


# -- 5. encodings ----------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_with_bom_imports_and_round_trips(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "wide.csv"
    header = ["ID", "NAME", STATUS, STAMP]
    rows = [["1", "Ünïcødé 💥", "PENDING", ""], ["2", 'two\r\nlines, "quoted"', "FAILED", "x"]]
    original = ("\ufeff" + _csv_text(header, rows, terminator="\r\n")).encode(encoding)
    path.write_bytes(original)
    with csvjournal.open(path, key="ID") as journal:
        assert journal.get("2") == dict(zip(header, rows[1], strict=True))
        assert journal.to_dataframe().to_dict("records") == [
            dict(zip(header, row, strict=True)) for row in rows
        ]
    assert path.read_bytes() == original

    bare = tmp_path / "bare.csv"
    bare.write_bytes(("\ufeff" + _csv_text(["ID", "NAME"], [["1", "é"]])).encode(encoding))
    with csvjournal.open(bare, key="ID") as journal:
        journal.record("2", NAME="ß")
        stamp = journal.get("2")[STAMP]  # type: ignore[index]
    data = bare.read_bytes()
    bom = codecs.BOM_UTF16_LE if encoding == "utf-16-le" else codecs.BOM_UTF16_BE
    assert data.startswith(bom)
    assert data[len(bom) :].decode(encoding) == _csv_text(
        ["ID", "NAME", STATUS, STAMP], [["1", "é", "PENDING", ""], ["2", "ß", "PENDING", stamp]]
    )


def test_latin1_bytes_need_an_encoding(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    original = "ID,NAME,STATUS,LAST_PROCESSED\n1,plain,PENDING,\n2,café,PENDING,\n".encode(
        "latin-1"
    )
    path.write_bytes(original)
    with pytest.raises(csvjournal.CsvFormatError) as caught:
        csvjournal.open(path, key="ID")
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, csvjournal.CsvJournalError)
    message = str(caught.value)
    assert str(path) in message
    assert "line 3, column 6" in message
    assert "encoding=" in message
    assert _names(tmp_path) == ["latin.csv"]
    assert path.read_bytes() == original

    with csvjournal.open(path, key="ID", encoding="latin-1") as journal:
        assert journal.get("2") == {"ID": "2", "NAME": "café", STATUS: "PENDING", STAMP: ""}
        journal.record("3", NAME="Ångström")
    data = path.read_bytes()
    assert data.startswith(original)
    assert data[len(original) :].startswith("3,Ångström,PENDING,".encode("latin-1"))


# -- 6. formula guard ------------------------------------------------------------------------

DANGEROUS = ["=SUM(A1)", "+1+1", "-cmd", "@x", "\tx", "-1-1", "-2e3+cmd|' /C calc'!A0", "-", "-,"]
# numbers with a decimal comma or group separators too (a ;-delimited European sheet)
HARMLESS = [
    "-12.5",
    "+3",
    "1e5",
    "-12,5",
    "-1.234,50",
    "-1,234.50",
    "+.5",
    "-,5",
    "-\u0661\u0662",  # digits of another script: left alone by every rules
    "plain",
    "a=b",
    "",
]


@pytest.mark.parametrize("guard", [True, False])
def test_formula_guard_prefixes_only_the_exported_formulas(tmp_path: Path, guard: bool) -> None:
    path = tmp_path / "orders.csv"
    values = DANGEROUS + HARMLESS
    with csvjournal.open(path, key="PO_NUMBER", formula_guard=guard) as journal:
        for i, value in enumerate(values):
            journal.record(f"PO-{i}", "COMPLETED", NOTE=value)
        assert [journal.get(f"PO-{i}")["NOTE"] for i in range(len(values))] == values  # type: ignore[index]
        assert list(journal.to_dataframe()["NOTE"]) == values
    records = _parse(path.read_bytes())
    note = records[0].index("NOTE")
    exported = [row[note] for row in records[1:]]
    if guard:
        assert exported == ["'" + value for value in DANGEROUS] + HARMLESS
    else:
        assert exported == values
    assert [row[0] for row in records[1:]] == [f"PO-{i}" for i in range(len(values))]


_GUARD_TEXT = st.one_of(
    st.text(max_size=8),
    st.builds(
        "".join,
        st.lists(st.sampled_from(["'", "-", "+", "=", "1", "2", ",", ".", "e", "x"]), max_size=7),
    ),
)


@given(value=_GUARD_TEXT)
def test_the_guard_shows_each_text_as_at_most_one_other_and_reads_it_back(value: str) -> None:
    shown = guard_formula(value)
    twin = guard_twin(value)
    assert unguard_formula(shown) in {value, twin}
    if twin is None:
        assert unguard_formula(shown) == value
    else:
        assert twin != value
        assert guard_formula(twin) == shown
        assert guard_twin(twin) == value


@pytest.mark.parametrize(
    ("value", "rules", "shown"),
    [
        ("-12,5", 2, "-12,5"),
        ("-12,5", 1, "'-12,5"),  # an older csvjournal's sheet
        ("'-12,5", 2, "'-12,5"),
        ("'-12,5", 1, "'-12,5"),  # its twin, then
        ("-12.5", 1, "-12.5"),
        ("=A", 1, "'=A"),
    ],
)
def test_the_guards_rules_show_and_read_back_a_text(value: str, rules: int, shown: str) -> None:
    assert guard_formula(value, rules) == shown
    assert unguard_formula(shown, rules) in {value, guard_twin(value, rules)}


@pytest.mark.parametrize("rendering", ["exporter", "export(path)"])
def test_the_formula_guard_guards_the_header_too(tmp_path: Path, rendering: str) -> None:
    path = tmp_path / "orders.csv"
    with csvjournal.open(path, key="@ID", formula_guard=True) as journal:
        journal.record("PO-1", fields={"=HEAD": "x", "+H2": "-5", "-12": "y", "N": "1"})
        if rendering == "export(path)":
            path = tmp_path / "copy.csv"
            journal.export(path)
    header = _parse(path.read_bytes())[0]
    assert header == ["'@ID", "STATUS", "LAST_PROCESSED", "'=HEAD", "'+H2", "-12", "N"]


def test_the_formula_guard_is_the_journals_every_exporter_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    with csvjournal.open(path, key="PO_NUMBER", formula_guard=True) as journal:
        journal.record("PO-1", NOTE="=HYPERLINK(1)")
    # Another process exporting without the option: the command line, a worker, run.
    result = CliRunner().invoke(cli, ["record", str(path), "PO-2", "--new", "NOTE=@x"])
    assert result.exit_code == 0, result.stderr
    notes = [row[-1] for row in _parse(path.read_bytes())[1:]]
    assert notes == ["'=HYPERLINK(1)", "'@x"]
    with csvjournal.open(path, formula_guard=False):  # turned off, and stored so
        pass
    with csvjournal.open(path) as journal:
        journal.record("PO-3", NOTE="=1")
    notes = [row[-1] for row in _parse(path.read_bytes())[1:]]
    assert notes == ["=HYPERLINK(1)", "@x", "=1"]


def test_handles_already_open_follow_the_guard_another_open_turned_on(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    with csvjournal.open(path, key="PO_NUMBER") as running:  # the job's exporting handle
        running.record("=K", NOTE="=1")
        running.flush(timeout=10)
        assert _parse(path.read_bytes())[1][0] == "=K"
        csvjournal.open(path, formula_guard=True, export=False).close()  # turned on
        assert running.settings.formula_guard
        running.record("PO-2", NOTE="@x")
        running.flush(timeout=10)
        rows = _parse(path.read_bytes())[1:]
        assert [(row[0], row[-1]) for row in rows] == [("'=K", "'=1"), ("PO-2", "'@x")]
        with pytest.raises(csvjournal.RecordError, match="would show in the CSV"):
            running.record("'=K")  # the guard's twin check holds for it too
        copy = tmp_path / "copy.csv"
        running.export(copy)
        assert _parse(copy.read_bytes())[1][0] == "'=K"


@pytest.mark.parametrize("exporting", [True, False], ids=["exporter running", "no exporter"])
def test_a_guard_turned_on_with_no_record_after_it_still_reaches_the_csv(
    tmp_path: Path, exporting: bool
) -> None:
    path = tmp_path / "orders.csv"
    with csvjournal.open(path, key="PO_NUMBER") as journal:
        journal.record("PO-1", NOTE="=1+1")
    running = csvjournal.open(path, export=exporting)
    try:
        csvjournal.open(path, formula_guard=True, export=False).close()  # no record after it
        assert not progress(running).csv_current  # what `csvjournal status` says
        running.flush(timeout=10)
        assert _parse(path.read_bytes())[1][-1] == "'=1+1"
        copy = tmp_path / "copy.csv"
        running.export(copy)
        assert copy.read_bytes() == path.read_bytes()
    finally:
        running.close()
    before = path.read_bytes()
    csvjournal.open(path).close()  # current: left byte for byte
    assert path.read_bytes() == before


def test_a_merge_reads_the_sheet_with_the_guard_it_was_written_with(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("K,V,=C\n=k,=v,x\n2,plain,y\n", encoding="utf-8")
    csvjournal.open(path, key="K", formula_guard=True).close()
    csvjournal.open(path, formula_guard=False, export=False).close()  # the sheet: still guarded
    assert path.read_text(encoding="utf-8").startswith("K,V,'=C,")
    path.write_text(path.read_text(encoding="utf-8").replace("plain", "edited"), encoding="utf-8")
    report = csvjournal.merge_csv(path)
    assert (report.added, report.updated, report.missing) == ([], ["2"], [])
    assert report.added_columns == []
    with csvjournal.open(path, export=False) as journal:
        assert journal.columns == ["K", "V", "=C", "STATUS", "LAST_PROCESSED"]
        assert journal.get("=k")["V"] == "=v"  # type: ignore[index]


def test_init_formula_guard_sets_the_guard_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("ID,NOTE\n1,=cmd\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["init", str(path), "--key", "ID", "--formula-guard"])
    assert result.exit_code == 0, result.stderr
    with csvjournal.open(path) as journal:
        assert journal.settings.formula_guard
        journal.record("1", "COMPLETED")
    assert _parse(path.read_bytes())[1][:2] == ["1", "'=cmd"]


@pytest.mark.parametrize("bom", [False, True])
@pytest.mark.parametrize("first", ["key", "note"])
def test_a_first_field_starting_with_u_feff_is_quoted_and_reads_back_the_same(
    tmp_path: Path, first: str, bom: bool
) -> None:
    # Written bare at a line's start, it read back as a byte-order mark where two files
    # were joined: csvjournal refused its own export (a new journal of it, a merge).
    header = ["ID", "NOTE"] if first == "key" else ["NOTE", "ID"]
    path = tmp_path / "a.csv"
    path.write_bytes((codecs.BOM_UTF8 if bom else b"") + f"{','.join(header)}\n".encode())
    with csvjournal.open(path, key="ID") as journal:
        journal.record("\ufeffP1", "DONE", NOTE="\ufeffpasted")
        journal.record("P2", "DONE", NOTE="plain")
        journal.record('\ufeff"q"', "DONE", NOTE="\ufeff,")
    exported = path.read_bytes()
    copy = tmp_path / "copy" / "a.csv"
    copy.parent.mkdir()
    copy.write_bytes(exported)
    with csvjournal.open(copy, key="ID") as journal:
        assert journal.get("\ufeffP1")["NOTE"] == "\ufeffpasted"
        assert journal.get('\ufeff"q"')["NOTE"] == "\ufeff,"
    assert copy.read_bytes() == exported
    path.write_bytes(exported.replace(b"plain", b"edited"))
    csvjournal.merge_csv(path)  # a hand edit beside them merges
    with csvjournal.open(path) as journal:
        assert journal.get("P2")["NOTE"] == "edited"
        assert journal.get("\ufeffP1")["NOTE"] == "\ufeffpasted"
