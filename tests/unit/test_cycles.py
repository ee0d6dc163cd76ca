"""Settlement cycles: event time picks the cycle; cut-off adds the grace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from workers.cycles import CycleClock

DAY = CycleClock(timedelta(days=1), timedelta(minutes=5))


def test_daily_cycle_and_cutoff() -> None:
    at = datetime(2026, 11, 24, 17, 30, tzinfo=UTC)
    start = DAY.cycle_start(at)
    assert start == datetime(2026, 11, 24, tzinfo=UTC)
    assert DAY.cutoff(start) == datetime(2026, 11, 25, 0, 5, tzinfo=UTC)
    assert DAY.batch_id("m-1", "EUR", start) == "m-1:EUR:20261124T000000Z"


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
        max_value=datetime(2100, 1, 1),  # noqa: DTZ001
        timezones=st.just(UTC),
    ),
    st.integers(min_value=1, max_value=86_400 * 7),
)
def test_event_time_falls_inside_its_cycle(at: datetime, cycle_s: int) -> None:
    clock = CycleClock(timedelta(seconds=cycle_s), timedelta(0))
    start = clock.cycle_start(at)
    assert start <= at < start + clock.cycle
    assert clock.cycle_start(start) == start
