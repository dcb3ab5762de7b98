"""Timestamp cells re-formatted by a spreadsheet, read back as the moments they can show."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from csvjournal._shownstamp import stamp_windows
from csvjournal._values import format_timestamp


@pytest.mark.parametrize(
    ("cell", "windows"),
    [
        ("30.11.2026 14:44", [("2026-11-30T14:44:00.000Z", "2026-11-30T14:45:00.000Z")]),
        ("30.11.26 14:44:12", [("2026-11-30T14:44:12.000Z", "2026-11-30T14:44:13.000Z")]),
        ("11/30/2026 2:44 PM", [("2026-11-30T14:44:00.000Z", "2026-11-30T14:45:00.000Z")]),
        ("11/30/2026 12:05 a.m.", [("2026-11-30T00:05:00.000Z", "2026-11-30T00:06:00.000Z")]),
        ("2026-11-30 14:44:12", [("2026-11-30T14:44:12.000Z", "2026-11-30T14:44:13.000Z")]),
        ("2026-11-30T14:44:12Z", [("2026-11-30T14:44:12.000Z", "2026-11-30T14:44:13.000Z")]),
        ("2026/11/30 14:44:12.3", [("2026-11-30T14:44:12.300Z", "2026-11-30T14:44:12.400Z")]),
        (
            "1/2/2026 09:30",
            [
                ("2026-02-01T09:30:00.000Z", "2026-02-01T09:31:00.000Z"),
                ("2026-01-02T09:30:00.000Z", "2026-01-02T09:31:00.000Z"),
            ],
        ),
        ("13/2/2026 09:30", [("2026-02-13T09:30:00.000Z", "2026-02-13T09:31:00.000Z")]),
        ("2/2/2026 09:30", [("2026-02-02T09:30:00.000Z", "2026-02-02T09:31:00.000Z")]),
        # pandas' and isoformat()'s, with a zone: taken back to UTC
        (
            "2026-11-30 14:44:12.345+00:00",
            [("2026-11-30T14:44:12.345Z", "2026-11-30T14:44:12.346Z")],
        ),
        (
            "2026-11-30 14:44:12.345000+00:00",
            [("2026-11-30T14:44:12.345Z", "2026-11-30T14:44:12.346Z")],
        ),
        (
            "2026-11-30 15:44:12.345+01:00",
            [("2026-11-30T14:44:12.345Z", "2026-11-30T14:44:12.346Z")],
        ),
        ("2026-11-30 09:44:12-0500", [("2026-11-30T14:44:12.000Z", "2026-11-30T14:44:13.000Z")]),
        ("2026-11-30 14:44:12 UTC", [("2026-11-30T14:44:12.000Z", "2026-11-30T14:44:13.000Z")]),
        ("2026-12-01 00:14+09:30", [("2026-11-30T14:44:00.000Z", "2026-11-30T14:45:00.000Z")]),
    ],
)
def test_re_formatted_stamps_read_as_the_minute_or_second_shown(
    cell: str, windows: list[tuple[str, str]]
) -> None:
    assert stamp_windows(cell) == windows


@pytest.mark.parametrize(
    "cell", ["", "soon", "30.11.2026", "45000.61", "31.02.2026 10:00", "11/30/2026 13:00 PM"]
)
def test_cells_that_show_no_moment_give_no_window(cell: str) -> None:
    assert stamp_windows(cell) == []


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)))
def test_a_stamp_lies_in_a_window_of_each_rendering(moment: datetime) -> None:
    stamp = format_timestamp(moment.replace(tzinfo=UTC))
    for cell in (
        moment.strftime("%d.%m.%Y %H:%M"),
        moment.strftime("%m/%d/%Y %I:%M %p"),
        moment.strftime("%Y-%m-%d %H:%M:%S"),
        str(pd.Timestamp(stamp).tz_convert("Asia/Kolkata")),  # as pandas writes it back
    ):
        assert any(start <= stamp < end for start, end in stamp_windows(cell)), cell
    assert stamp_windows(moment.strftime("%d.%m.%Y %H:%M"))[0][0] > format_timestamp(
        (moment - timedelta(minutes=1)).replace(tzinfo=UTC)
    )
