"""The load test's world is sized so an average payer stays at a quarter of its velocity count limits."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from paystream.loadtest.world import DEMO_PAYERS, LIMIT_SHARE, payers_for_load, world_for_load


def test_the_demo_world_is_enough_for_a_light_load() -> None:
    assert payers_for_load(100, 60, 20, 200) == DEMO_PAYERS
    assert len(world_for_load(100, 60).payers) == DEMO_PAYERS


def test_a_minute_at_three_thousand_per_second_needs_many_more_payers() -> None:
    # 3,000/s for 65 s = 195,000 payments; at 5 per payer (a quarter of 20 in ten minutes): 39,000 payers.
    assert payers_for_load(3_000, 65, 20, 200) == 39_000
    world = world_for_load(3_000, 65)
    assert len(world.payers) == 39_000
    assert len(world.merchants) == 390


@given(
    rate=st.floats(min_value=1, max_value=100_000),
    seconds=st.floats(min_value=1, max_value=200_000),
    count_10m=st.integers(min_value=1, max_value=1_000),
    count_24h=st.integers(min_value=1, max_value=10_000),
)
def test_the_average_payer_stays_within_its_share_of_both_limits(
    rate: float, seconds: float, count_10m: int, count_24h: int
) -> None:
    payers = payers_for_load(rate, seconds, count_10m, count_24h)
    assert payers >= DEMO_PAYERS
    assert rate * min(seconds, 600) / payers <= count_10m * LIMIT_SHARE + 1e-9
    assert rate * min(seconds, 86_400) / payers <= count_24h * LIMIT_SHARE + 1e-9
