"""The views' window arithmetic names exactly the windows faust writes, so a web view finds what the agents stored."""

from __future__ import annotations

from datetime import UTC, datetime

from faust.windows import HoppingWindow, TumblingWindow, _PyHoppingWindow
from hypothesis import given, settings
from hypothesis import strategies as st

from paystream.views.windows import (
    HOUR_S,
    HOUR_STEP_S,
    HOURS_PER_EVENT,
    MINUTE_S,
    MINUTES_SHOWN_MAX,
    hour_range,
    hour_start,
    hour_starts_of,
    minute_ranges,
    minute_start,
    window_end_s,
    window_range,
)

PROPERTY = settings(derandomize=True, max_examples=500, deadline=None)
# 2001..2100 in seconds, with fractions: event times as faust sees them (occurred_at as a float).
TIMES = st.floats(min_value=978_307_200.0, max_value=4_102_444_800.0, allow_nan=False, allow_infinity=False)
NOON = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()

# faust uses its Cython windows when they are built, and the Python ones otherwise: check both.
HOPPING_KINDS = (HoppingWindow, _PyHoppingWindow)


@PROPERTY
@given(at_s=TIMES)
def test_the_minute_of_an_event_is_the_tumbling_window_faust_writes(at_s: float) -> None:
    (written,) = TumblingWindow(MINUTE_S).ranges(at_s)
    assert window_range(minute_start(at_s), MINUTE_S) == written
    assert minute_ranges(at_s, 0) == [written]


@PROPERTY
@given(at_s=TIMES)
def test_the_hours_of_an_event_are_the_hopping_windows_faust_writes(at_s: float) -> None:
    for kind in HOPPING_KINDS:
        written = kind(HOUR_S, HOUR_STEP_S).ranges(at_s)
        assert [window_range(start, HOUR_S) for start in hour_starts_of(at_s)] == written
        assert len(written) == HOURS_PER_EVENT == 6


@PROPERTY
@given(now_s=TIMES)
def test_the_current_hour_is_the_one_that_ends_next_and_holds_now(now_s: float) -> None:
    shown = hour_range(now_s)
    for kind in HOPPING_KINDS:
        # faust's own "earliest window holding now": the oldest of the hours now falls in.
        assert shown == kind(HOUR_S, HOUR_STEP_S).earliest(now_s)
    assert shown[0] <= now_s < window_end_s(shown)
    # It ends at the next step boundary, so it holds between 50 and 60 minutes of the past.
    assert 0 < window_end_s(shown) - now_s <= HOUR_STEP_S
    assert HOUR_S - HOUR_STEP_S <= now_s - shown[0] < HOUR_S


def test_examples_at_noon() -> None:
    assert minute_start(NOON + 59.9) == NOON
    assert minute_start(NOON - 0.001) == NOON - 60
    assert hour_start(NOON + 599) == NOON - HOUR_S + HOUR_STEP_S  # 11:10..12:10
    assert hour_start(NOON + 600) == NOON - HOUR_S + 2 * HOUR_STEP_S  # 11:20..12:20
    assert hour_range(NOON) == (NOON - 3000, NOON + 599.9)
    assert window_end_s(hour_range(NOON)) == NOON + 600


def test_minute_ranges_list_the_current_minute_then_closed_ones_newest_first() -> None:
    ranges = minute_ranges(NOON + 30, 3)
    assert [start for start, _end in ranges] == [NOON, NOON - 60, NOON - 120, NOON - 180]
    assert all(end == start + MINUTE_S - 0.1 for start, end in ranges)
    assert len(minute_ranges(NOON, MINUTES_SHOWN_MAX)) == MINUTES_SHOWN_MAX + 1
