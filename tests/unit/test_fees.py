"""Fee arithmetic: integer only, half-up rounding, bounded by the gross amount."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.fees import FeeSchedule, fee_for, round_half_up_div, split

AMOUNTS = st.integers(min_value=1, max_value=10**15)
SCHEDULES = st.builds(
    FeeSchedule,
    fee_bps=st.integers(min_value=0, max_value=10_000),
    fixed_minor=st.integers(min_value=0, max_value=10_000),
    min_minor=st.integers(min_value=0, max_value=10_000),
)


@pytest.mark.parametrize(
    ("numerator", "denominator", "expected"),
    [(0, 10, 0), (4, 10, 0), (5, 10, 1), (6, 10, 1), (14, 10, 1), (15, 10, 2), (25, 10, 3)],
)
def test_round_half_up(numerator: int, denominator: int, expected: int) -> None:
    assert round_half_up_div(numerator, denominator) == expected


@pytest.mark.parametrize(
    ("gross", "bps", "fixed", "minimum", "expected_fee"),
    [
        (10_000, 290, 30, 0, 320),  # 2.9% + 30
        (1_000, 250, 0, 50, 50),  # the minimum wins over 25
        (150, 150, 0, 0, 2),  # 2.25 rounds down
        (100, 150, 0, 0, 2),  # 1.5 rounds half up
        (20, 190, 25, 0, 20),  # capped at gross: 0.38 -> 0 + 25 > 20
        (7, 0, 0, 0, 0),
    ],
)
def test_fee_examples(gross: int, bps: int, fixed: int, minimum: int, expected_fee: int) -> None:
    assert fee_for(gross, FeeSchedule(bps, fixed, minimum)) == expected_fee


@given(AMOUNTS, SCHEDULES)
def test_fee_and_net_always_add_up_to_gross(gross: int, schedule: FeeSchedule) -> None:
    fee, net = split(gross, schedule)
    assert fee + net == gross
    assert 0 <= fee <= gross
    assert net >= 0


@given(AMOUNTS, SCHEDULES)
def test_fee_is_within_half_a_minor_unit_of_the_exact_rate(gross: int, schedule: FeeSchedule) -> None:
    fee = fee_for(gross, schedule)
    exact_twice = 2 * gross * schedule.fee_bps  # twice the exact proportional fee, times 10_000
    proportional = round_half_up_div(gross * schedule.fee_bps, 10_000)
    assert abs(2 * 10_000 * proportional - exact_twice) <= 10_000
    if fee not in (gross, schedule.min_minor):
        assert fee == proportional + schedule.fixed_minor


@given(st.integers(min_value=1, max_value=10**12), st.integers(min_value=1, max_value=10**12), SCHEDULES)
def test_fee_is_monotonic_in_gross(a: int, b: int, schedule: FeeSchedule) -> None:
    low, high = sorted((a, b))
    if fee_for(low, schedule) < low:  # below the cap the fee never falls as gross grows
        assert fee_for(low, schedule) <= fee_for(high, schedule)
