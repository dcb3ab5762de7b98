"""Records kept as the file's bytes plus changes: the bytes written are always the same as
rendering every record as text would give."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from csvjournal._filelines import FileLines

_HEAD = b"\xef\xbb\xbfID;NOTE\r\n"
# A record is never an empty line (the csv module writes one empty cell as "").
_CHARS = st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n")
_TEXT = st.text(_CHARS, min_size=1, max_size=8)


@settings(max_examples=150, deadline=None)
@given(
    records=st.lists(_TEXT, max_size=30),
    end=st.sampled_from(["\n", "\r\n", "\r"]),
    open_end=st.booleans(),
    edits=st.lists(st.tuples(st.integers(0, 40), _TEXT), max_size=12),
)
def test_pieces_equal_the_records_rendered_as_text(
    records: list[str], end: str, open_end: bool, edits: list[tuple[int, str]]
) -> None:
    body = "".join(r + end for r in records)
    if open_end and records:
        body = body[: -len(end)]
    data = _HEAD + body.encode()
    lines = FileLines.parse(data, len(_HEAD), len(records), "utf-8", end)
    assert lines is not None
    expected = [r + end for r in records]
    for index, text in edits:
        if index < len(expected):
            lines[index] = expected[index] = text + end
        else:
            lines.append(text + end)
            expected.append(text + end)
    assert len(lines) == len(expected)
    assert [lines[i] for i in range(len(lines))] == expected
    assert b"".join(bytes(p) for p in lines.pieces()) == "".join(expected).encode()
    assert lines.materialize() == expected


@pytest.mark.parametrize(
    ("body", "records", "end"),
    [
        pytest.param(b'a;"two\nlines"\nb;x\n', 2, "\n", id="LF-inside-a-quoted-cell"),
        pytest.param(b'a;"bare\nLF"\r\nb;x\r\n', 2, "\r\n", id="bare-LF-under-CRLF"),
        pytest.param(b"a;x\nb;x\n", 3, "\n", id="fewer-records-than-exported"),
    ],
)
def test_a_file_whose_lines_are_not_its_records_is_declined(
    body: bytes, records: int, end: str
) -> None:
    assert FileLines.parse(_HEAD + body, len(_HEAD), records, "utf-8", end) is None


@pytest.mark.parametrize(
    ("encoding", "usable"), [("cp1252", True), ("latin1", True), ("utf-16-le", False)]
)
def test_only_encodings_with_one_byte_line_breaks_are_sliced(encoding: str, usable: bool) -> None:
    data = "ID\ré\r".encode(encoding)
    head = len("ID\r".encode(encoding))
    assert (FileLines.parse(data, head, 1, encoding, "\r") is not None) == usable
