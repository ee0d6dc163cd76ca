"""Pacing: recorded gaps scaled by the speed, and a rate cap no sequence of requests can exceed."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paystream.replay.pacing import SPEED_MAX, RateCap, Schedule, speed_for_mean_rate

timestamps = st.lists(st.integers(min_value=0, max_value=10**13), min_size=1, max_size=50)
speeds = st.floats(min_value=0.01, max_value=1_000)


@given(ts=timestamps, speed=speeds)
def test_sorted_timestamps_keep_their_gaps_divided_by_the_speed(ts: list[int], speed: float) -> None:
    ts.sort()
    schedule = Schedule(speed)
    due = [schedule.due_s(t) for t in ts]
    assert due[0] == 0.0
    for i in range(1, len(ts)):
        assert due[i] == pytest.approx((ts[i] - ts[0]) / 1000 / speed)


@given(ts=timestamps, speed=speeds)
def test_the_schedule_never_goes_back(ts: list[int], speed: float) -> None:
    schedule = Schedule(speed)
    due = [schedule.due_s(t) for t in ts]
    assert all(later >= earlier for earlier, later in itertools.pairwise(due))


def test_a_record_stamped_before_its_predecessor_is_due_right_after_it() -> None:
    schedule = Schedule(2.0)
    assert [schedule.due_s(t) for t in (1_000, 3_000, 2_000, 5_000)] == [0.0, 1.0, 1.0, 2.0]


@given(ts=timestamps)
def test_speed_max_sends_everything_at_once(ts: list[int]) -> None:
    schedule = Schedule(SPEED_MAX)
    assert {schedule.due_s(t) for t in ts} == {0.0}


# Steps of a player: (seconds since the last step, how many records it wants to send now).
steps = st.lists(st.tuples(st.floats(min_value=0, max_value=0.5), st.integers(min_value=1, max_value=60)), max_size=80)


@given(rate=st.floats(min_value=0.5, max_value=20_000), burst_s=st.floats(min_value=0.001, max_value=0.2), plan=steps)
def test_no_interval_gets_more_than_the_cap_plus_one_burst(
    rate: float, burst_s: float, plan: list[tuple[float, int]]
) -> None:
    cap = RateCap(rate, 0.0, burst_s)
    now_s = 0.0
    sent: list[tuple[float, int]] = []
    for gap_s, wanted in plan:
        now_s += gap_s
        count = min(wanted, math.floor(cap.burst))
        if cap.wait_s(count, now_s) == 0:
            cap.take(count, now_s)
            sent.append((now_s, count))
    for i, (start_s, _) in enumerate(sent):
        for j in range(i, len(sent)):
            window_s = sent[j][0] - start_s
            total = sum(count for _, count in sent[i : j + 1])
            assert total <= rate * window_s + cap.burst + 1e-6, (i, j, total, window_s)


@given(rate=st.floats(min_value=0.5, max_value=20_000), count=st.integers(min_value=1, max_value=50))
def test_waiting_as_told_is_enough(rate: float, count: int) -> None:
    cap = RateCap(rate, 0.0)
    count = min(count, math.floor(cap.burst))
    cap.take(count, 0.0)
    wait_s = cap.wait_s(count, 0.0)
    left = cap.burst - count  # a fraction of a record when rate x burst is not whole
    assert wait_s == pytest.approx(max(0.0, count - left) / rate)
    assert cap.wait_s(count, wait_s) == 0


def test_more_than_one_burst_at_once_never_fits() -> None:
    cap = RateCap(1_000, 0.0)
    assert cap.burst == 10
    assert cap.wait_s(11, 100.0) == math.inf
    assert cap.wait_s(10, 100.0) == 0


def test_a_slow_cap_lets_one_record_through_at_a_time() -> None:
    cap = RateCap(10, 0.0)
    assert cap.burst == 1
    cap.take(1, 0.0)
    assert cap.wait_s(1, 0.05) == pytest.approx(0.05)


@given(
    records=st.integers(min_value=2, max_value=10**6),
    span_ms=st.integers(min_value=1, max_value=10**9),
    rate=st.floats(min_value=0.1, max_value=10**5),
)
def test_speed_for_mean_rate_gives_that_mean_rate(records: int, span_ms: int, rate: float) -> None:
    speed = speed_for_mean_rate(records, span_ms, rate)
    played_s = span_ms / 1000 / speed
    assert (records - 1) / played_s == pytest.approx(rate)


def test_a_recording_without_span_has_no_speed_to_scale() -> None:
    assert speed_for_mean_rate(1, 0, 100) == SPEED_MAX
    assert speed_for_mean_rate(500, 0, 100) == SPEED_MAX
