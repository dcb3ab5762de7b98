"""Where a place in CSV text is, for error messages: lines end as the csv module ends them
(CRLF, LF or a lone CR), columns count characters."""

from __future__ import annotations

import io

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from csvjournal._csvlocate import locate_field, locate_offset


def _lines(text: str) -> list[str]:
    return list(io.StringIO(text, newline=""))  # the lines the csv module reads


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab,\r\n🙂", max_size=40), st.data())
def test_an_offset_is_placed_on_the_line_the_csv_module_reads_it_on(
    text: str, data: st.DataObject
) -> None:
    offset = data.draw(st.integers(min_value=0, max_value=len(text)))
    assume(offset == 0 or text[offset - 1 : offset + 1] != "\r\n")  # (never a place)
    line, column = locate_offset(text, offset)
    before = _lines(text[:offset]) or [""]
    if before[-1].endswith(("\n", "\r")):
        before.append("")  # the offset starts a line
    assert (line, column) == (len(before), len(before[-1]) + 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="ab", max_size=3), min_size=1, max_size=5), st.data())
def test_a_field_is_placed_on_its_line_and_column(fields: list[str], data: st.DataObject) -> None:
    ending = data.draw(st.sampled_from(["\n", "\r", "\r\n"]))
    lines = ["x,y", ",".join(fields), "z"]
    text = ending.join(lines) + ending
    index = data.draw(st.integers(min_value=0, max_value=len(fields) - 1))
    column = sum(len(field) + 1 for field in fields[:index]) + 1
    assert locate_field(text, 2, index, ",", '"') == (2, column)
