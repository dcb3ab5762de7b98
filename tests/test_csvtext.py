"""A CSV file's text in pieces: the same lines, records and error places as the whole text,
at the width of each piece's own characters."""

from __future__ import annotations

import io
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import csvjournal
from csvjournal import _csvtext, csvio
from csvjournal._csvtext import CsvText, lines
from csvjournal.csvio import read_csv
from csvjournal.errors import CsvFormatError


@pytest.fixture(name="small_chunks")
def small_chunks_fixture() -> Iterator[None]:
    """Decode a few bytes at a time, as a big file is decoded MBs at a time."""
    saved = _csvtext._CHUNK
    _csvtext._CHUNK = 5
    yield
    _csvtext._CHUNK = saved


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='ab,"\r\n\x0c\x85\u2028', max_size=60))
def test_lines_are_those_the_csv_module_reads_from_a_file(text: str) -> None:
    # The reader is fed lines cut from the text (no 4-byte-a-character copy of it): they
    # must be the lines io.StringIO(newline="") gives, or quoted line breaks change.
    assert list(lines(text)) == list(io.StringIO(text, newline=""))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='ab,"\r\n', max_size=80), st.integers(min_value=1, max_value=9))
def test_lines_split_a_part_at_a_time_are_the_same_lines(text: str, part: int) -> None:
    # (a piece is split into lines 1 MB at a time: here a few characters)
    saved, _csvtext._SPLIT = _csvtext._SPLIT, part
    try:
        assert list(lines(text)) == list(io.StringIO(text, newline=""))
    finally:
        _csvtext._SPLIT = saved


@settings(max_examples=400, deadline=None)
@given(
    st.text(alphabet='ab,"\r\n\x85\u2028é€🙂', max_size=80),
    st.sampled_from(["utf-8", "utf-16-le", "utf-32-be"]),
    st.integers(min_value=1, max_value=9),
)
def test_pieces_end_at_line_breaks_and_give_the_same_lines(
    text: str, encoding: str, chunk: int
) -> None:
    saved, _csvtext._CHUNK = _csvtext._CHUNK, chunk
    try:
        decoded = CsvText.decode(memoryview(text.encode(encoding)), encoding)
    finally:
        _csvtext._CHUNK = saved
    assert decoded.whole() == text
    for piece, after in zip(decoded.pieces, decoded.pieces[1:], strict=False):
        assert piece.endswith(("\n", "\r"))
        assert not (piece.endswith("\r") and after.startswith("\n"))  # no CRLF split
    assert list(decoded.lines()) == list(io.StringIO(text, newline=""))
    assert decoded.blank() == (text.strip("\r\n") == "")
    assert decoded.ends_with_break() == text.endswith(("\n", "\r"))


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.csv"
    path.write_bytes(text.encode("utf-8"))
    return path


def _error(path: Path) -> str:
    with pytest.raises(CsvFormatError) as caught:
        read_csv(path)
    return str(caught.value)


@pytest.mark.parametrize(
    ("body", "place"),
    [
        ('1,a\n2,"b\n3,c\n', "line 3, column 3: unclosed quote"),
        ("1,a\n2,b\n3,c,d\n", "line 4, column 5: 3 fields where the header has 2"),
        ("1,a\n2\n", "line 3, column 2: 1 field where the header has 2"),
        ('1,a\n2,"x\ny"z\n', "line 4, column 3"),
        ("1,a\n\ufeffID,N\n2,b\n", "line 3, column 1: a byte-order mark"),
        ('1,"é\n\ufeff"\n\ufeffID,N\n', "line 4, column 1: a byte-order mark"),
        ("1,a\n\n2,b\n", "line 3, column 1: blank line"),
    ],
)
def test_an_error_in_a_later_piece_is_placed_as_in_the_whole_text(
    tmp_path: Path, small_chunks: None, body: str, place: str
) -> None:
    path = _csv(tmp_path, "ID,N\n" + body)
    assert place in _error(path)


def test_the_records_of_pieces_are_the_records_of_the_file(
    tmp_path: Path, small_chunks: None
) -> None:
    rows = [["1", "a\r\nb"], ["2", "🙂"], ["3", 'q"q'], ["4", "\ufeffx"]]
    path = _csv(tmp_path, 'ID,"N\nM"\r\n1,"a\r\nb"\r\n2,🙂\r\n3,"q""q"\r\n4,\ufeffx\r\n')
    parsed = read_csv(path)
    assert parsed.header == ["ID", "N\nM"]
    assert [record for _, record in parsed.records()] == rows
    assert [line for line, _ in parsed.records()] == [3, 5, 6, 7]
    assert parsed.dialect.lineterminator == "\r\n"
    assert parsed.header_place(1) == (1, 4)


def _one_emoji_file(path: Path, rows: int) -> int:
    with path.open("w", encoding="utf-8", newline="") as file:
        file.write("PO_NUMBER,NOTE\n")
        for i in range(rows):
            file.write(f"PO-{i:07d},plain text of row {i} and more text\n")
        file.write("PO-last,a smile 🙂\n")
    return path.stat().st_size


def test_one_wide_character_does_not_widen_the_whole_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Held as one string, the text of a file with one emoji took 4 bytes a character:
    # reading it took 5-6x the file. (Pieces of 64 KB: a big file's pieces are MBs.)
    monkeypatch.setattr(_csvtext, "_CHUNK", 1 << 16)
    path = tmp_path / "big.csv"
    size = _one_emoji_file(path, 200_000)
    tracemalloc.start()
    try:
        parsed = read_csv(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert parsed.count == 200_001
    assert peak < 2.5 * size, f"{peak / size:.1f}x the file"


def _import_peak(path: Path) -> int:
    tracemalloc.start()
    try:
        with csvjournal.open(path, key="PO_NUMBER", export=False, keep_backups=0) as journal:
            _, peak = tracemalloc.get_traced_memory()
            assert len(journal) == 40_001
    finally:
        tracemalloc.stop()
    return peak


def test_an_import_of_a_file_with_one_emoji_takes_what_a_plain_one_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_csvtext, "_CHUNK", 1 << 16)
    (tmp_path / "warm.csv").write_text("PO_NUMBER\nPO-1\n")  # modules imported lazily
    csvjournal.open(tmp_path / "warm.csv", key="PO_NUMBER", export=False).close()
    wide, plain = tmp_path / "wide.csv", tmp_path / "plain.csv"
    _one_emoji_file(wide, 40_000)
    plain.write_bytes(wide.read_bytes().replace("🙂".encode(), b"xxxx"))  # as many bytes
    assert _import_peak(wide) < 1.2 * _import_peak(plain)


def test_a_header_longer_than_the_first_piece_keeps_its_line_terminator(
    tmp_path: Path, small_chunks: None
) -> None:
    # (a header of MBs: the first piece ends at a line break inside its quotes)
    path = _csv(tmp_path, 'ID,"N\nMMMMMMMMMMMM"\r\n1,a\r\n2,b\r\n')
    parsed = read_csv(path)
    assert len(parsed.text.pieces) > 1
    assert "\r\n" not in parsed.text.head
    assert parsed.header == ["ID", "N\nMMMMMMMMMMMM"]
    assert parsed.dialect.lineterminator == "\r\n"
    assert parsed.header_place(1) == (1, 4)


def test_the_dialect_is_sniffed_from_more_than_a_short_first_piece(
    tmp_path: Path, small_chunks: None
) -> None:
    # (hypothesis found it: the first piece was '"\n', which shows no delimiter)
    path = _csv(tmp_path, '"\n";00;000\n1;2;3\n4;5;6\n')
    parsed = read_csv(path)
    assert parsed.text.head == '"\n'
    assert parsed.dialect.delimiter == ";"
    assert parsed.header == ["\n", "00", "000"]
    assert [record for _, record in parsed.records()] == [["1", "2", "3"], ["4", "5", "6"]]


def test_a_header_longer_than_the_sniffs_sample_is_sniffed_whole(
    tmp_path: Path, small_chunks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (a header name of MBs holding line breaks: the sample, cut inside it, showed no ';')
    monkeypatch.setattr(csvio, "SNIFF_CHARS", 4)
    path = _csv(tmp_path, '"NNNN\nMMMMMMMMMMMM";A;B\r\n1;2;3\r\n')
    parsed = read_csv(path)
    assert parsed.text.head == '"NNNN\n'
    assert (parsed.dialect.delimiter, parsed.dialect.lineterminator) == (";", "\r\n")
    assert parsed.header == ["NNNN\nMMMMMMMMMMMM", "A", "B"]
    assert parsed.header_place(2) == (2, 17)
