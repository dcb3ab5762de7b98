"""The exporter's encoded records: whatever was changed or added, and however they were
made (from texts or from a file's bytes), the bytes are those of the records as text."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from csvjournal._records import PIECE, Records

_HEAD = b"\xef\xbb\xbfID;NOTE\r\n"
# A record is never an empty line (the csv module writes one empty cell as "").
_CHARS = st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n")
_TEXT = st.text(_CHARS, min_size=1, max_size=6)
_SIZES = st.sampled_from([0, 1, 3, PIECE - 1, PIECE, PIECE + 1, 2 * PIECE + 7])


def _check(records: Records, expected: list[str], encoding: str) -> None:
    assert len(records) == len(expected)
    some = sorted({0, len(expected) // 2, len(expected) - 1} & set(range(len(expected))))
    # texts() before pieces(): edits not yet spliced in are read as they are
    assert records.texts([*some, *reversed(some)]) == [
        expected[i] for i in [*some, *reversed(some)]
    ]
    assert records.texts(list(range(len(expected)))) == expected
    assert b"".join(bytes(p) for p in records.pieces()) == "".join(expected).encode(encoding)
    assert records.texts(list(range(len(expected)))) == expected
    for index in some:
        assert records[index] == expected[index]


@settings(max_examples=60, deadline=None)
@given(
    size=_SIZES,
    texts=st.lists(_TEXT, min_size=1, max_size=5),
    end=st.sampled_from(["\n", "\r\n", "\r"]),
    open_end=st.booleans(),
    from_file=st.booleans(),
    encoding=st.sampled_from(["utf-8", "utf-16-le", "cp1252"]),
    edits=st.lists(st.tuples(st.integers(0, 3 * PIECE), _TEXT), max_size=12),
    rounds=st.integers(1, 3),
)
def test_records_are_the_texts_whatever_changed(
    *,
    size: int,
    texts: list[str],
    end: str,
    open_end: bool,
    from_file: bool,
    encoding: str,
    edits: list[tuple[int, str]],
    rounds: int,
) -> None:
    if encoding == "cp1252":
        texts = [t.encode("cp1252", "replace").decode("cp1252") for t in texts]
        edits = [(i, t.encode("cp1252", "replace").decode("cp1252")) for i, t in edits]
    expected = [f"{texts[i % len(texts)]}{i}{end}" for i in range(size)]
    records: Records | None
    if from_file:
        body = "".join(expected)
        if open_end and expected:
            body = body[: -len(end)]
        records = Records.from_file(_HEAD + body.encode(encoding), len(_HEAD), size, encoding, end)
        if encoding == "utf-16-le":  # its line breaks are two bytes: not read back
            assert records is None
            return
        assert records is not None
    else:
        records = Records.from_texts([expected[:7], expected[7:]], encoding)
    for _ in range(rounds):  # exports between rounds of changes
        for index, text in edits:
            if index < len(expected):
                records[index] = expected[index] = text + end
            else:
                records.append(text + end)
                expected.append(text + end)
        _check(records, expected, encoding)


@pytest.mark.parametrize(
    ("body", "count", "end"),
    [
        pytest.param(b'a;"two\nlines"\nb;x\n', 2, "\n", id="LF-inside-a-quoted-cell"),
        pytest.param(b'a;"bare\nLF"\r\nb;x\r\n', 2, "\r\n", id="bare-LF-under-CRLF"),
        pytest.param(b"a;x\nb;x\n", 3, "\n", id="fewer-records-than-exported"),
    ],
)
def test_a_file_whose_lines_are_not_its_records_is_declined(
    body: bytes, count: int, end: str
) -> None:
    assert Records.from_file(_HEAD + body, len(_HEAD), count, "utf-8", end) is None
