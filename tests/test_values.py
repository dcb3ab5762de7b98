"""Value rendering and timestamps."""

from __future__ import annotations

import datetime as dt
import enum
import time
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

import csvjournal
from csvjournal._values import format_timestamp, parse_timestamp, render_value, timestamp_now


class Colour(enum.StrEnum):
    RED = "red"


class Status(str, enum.Enum):  # noqa: UP042 - the older idiom: str() is "Status.DONE"
    DONE = "DONE"


class Level(enum.IntEnum):
    HIGH = 3


class Size(int, enum.Enum):
    BIG = 7


class Ratio(float, enum.Enum):
    HALF = 0.5


class Flag(enum.IntFlag):
    ONE = 1


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("00123", "00123"),
        ("NA", "NA"),
        ("", ""),
        (None, ""),
        (0, "0"),
        (-12, "-12"),
        (1.5, "1.5"),
        (True, "True"),
        (False, "False"),
        (Decimal("1.50"), "1.50"),
        (dt.date(2026, 1, 2), "2026-01-02"),
        (dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC), "2026-01-02T03:04:05+00:00"),
        (Colour.RED, "red"),
        (Status.DONE, "DONE"),
        (Level.HIGH, "3"),
        (Size.BIG, "7"),
        (Ratio.HALF, "0.5"),
        (Flag.ONE, "1"),
        (Decimal("1E+2"), "1E+2"),
        (float("nan"), "nan"),
    ],
)
def test_render_value(value: object, text: str) -> None:
    assert render_value("F", value) == text


@pytest.mark.parametrize(
    "value", [{1}, [1], (1,), b"x", object(), {"a": 1}, dt.time(7, 8), dt.timedelta(1)]
)
def test_unsupported_value_is_a_type_error_naming_the_field(value: object) -> None:
    with pytest.raises(TypeError, match="'ATTACHMENTS'"):
        render_value("ATTACHMENTS", value)


def test_a_type_from_another_module_is_named_with_its_module() -> None:
    import numpy as np

    with pytest.raises(TypeError, match=r"of type numpy\.bool"):
        render_value("DONE", np.bool_(True))


def test_an_int_too_long_for_text_is_a_record_error_naming_the_field() -> None:
    with pytest.raises(csvjournal.RecordError, match=r"'BIG'.*pass it as a str"):
        render_value("BIG", 10**5000)


@given(st.text())
def test_text_is_kept_exactly(text: str) -> None:
    assert render_value("F", text) == text


@given(st.datetimes(timezones=st.just(dt.UTC)))
def test_timestamp_round_trips_to_the_millisecond(moment: dt.datetime) -> None:
    text = format_timestamp(moment)
    assert text.endswith("Z")
    assert parse_timestamp(text) == moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def test_timestamp_now_is_now_in_utc() -> None:
    before = dt.datetime.now(dt.UTC) - dt.timedelta(milliseconds=1)
    stamped = parse_timestamp(timestamp_now())
    after = dt.datetime.now(dt.UTC)
    assert before <= stamped <= after
    time.sleep(0.002)
    assert parse_timestamp(timestamp_now()) > stamped


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_timestamp_now_writes_what_format_timestamp_writes(now: float) -> None:
    second = int(now)
    moment = dt.datetime.fromtimestamp(second, dt.UTC) + dt.timedelta(
        milliseconds=int((now - second) * 1000)
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(time, "time", lambda: now)
        assert timestamp_now() == format_timestamp(moment)
