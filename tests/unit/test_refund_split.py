"""The refund fee policy's arithmetic: proportional, exact on the running total, never negative."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from workers.fees import FeeSchedule, split
from workers.refunds import fee_share, refund_split

schedules = st.builds(FeeSchedule, st.integers(0, 10_000), st.integers(0, 10_000), st.integers(0, 10_000))


@st.composite
def refunds_of_a_payment(draw: st.DrawFn) -> tuple[int, int, list[int]]:
    gross = draw(st.integers(1, 10**15))
    fee, _ = split(gross, draw(schedules))
    total = draw(st.integers(1, gross))
    cuts = sorted(draw(st.lists(st.integers(1, total - 1), max_size=12, unique=True))) if total > 1 else []
    amounts = [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]
    return gross, fee, amounts


@given(refunds_of_a_payment())
def test_partial_refunds_return_what_one_refund_of_their_sum_would(case: tuple[int, int, list[int]]) -> None:
    gross, fee, amounts = case
    refunded = fee_back = net_back = 0
    for amount in amounts:
        part = refund_split(gross, fee, refunded, amount)
        assert part.fee_back_minor + part.net_back_minor == amount
        assert part.fee_back_minor >= 0 and part.net_back_minor >= 0
        refunded += amount
        fee_back += part.fee_back_minor
        net_back += part.net_back_minor
    assert fee_back == fee_share(fee, gross, refunded)
    # Never more than was kept: the fee back is at most the fee, the net back at most the net.
    assert fee_back <= fee and net_back <= gross - fee
    if refunded == gross:
        assert (fee_back, net_back) == (fee, gross - fee)


@given(st.integers(1, 10**15), st.data())
def test_the_share_is_the_exact_proportion_rounded_half_up(gross: int, data: st.DataObject) -> None:
    fee = data.draw(st.integers(0, gross))
    refunded = data.draw(st.integers(0, gross))
    share = fee_share(fee, gross, refunded)
    # |share - fee * refunded / gross| <= 1/2, ties up: 2 * (share * gross - fee * refunded) in (-gross, gross].
    assert -gross < 2 * (share * gross - fee * refunded) <= gross


def test_examples() -> None:
    # 10.00 paid, fee 0.55: refund 2.50 returns 0.14 (0.1375 rounded), then the rest returns 0.41.
    first = refund_split(1_000, 55, 0, 250)
    second = refund_split(1_000, 55, 250, 750)
    assert (first.fee_back_minor, first.net_back_minor) == (14, 236)
    assert (second.fee_back_minor, second.net_back_minor) == (41, 709)
