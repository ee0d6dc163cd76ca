"""Fee arithmetic: integer only, half-up rounding, bounded by the gross amount.

The expected values here never come from `workers.fees` itself: a table of
cases worked out by hand, and an independent formulation in exact rational
arithmetic (`fractions.Fraction`) that the code is compared with.
"""

from __future__ import annotations

import inspect
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import Decoder, Invalid
from schemas.money import AMOUNT_MINOR_MAX, MINOR_UNIT_DIGITS
from schemas.payments import PaymentRequested
from tests.support.money import independent_fee
from workers.fees import FeeSchedule, fee_for, round_half_up_div, split

# Derandomized: the same examples on every run and every machine; bounded so the unit suite stays fast.
PROPERTY = settings(derandomize=True, max_examples=300, deadline=None)

AMOUNTS = st.one_of(
    st.integers(min_value=1, max_value=AMOUNT_MINOR_MAX),
    st.integers(min_value=1, max_value=100_000),  # small tickets, where minimum, fixed fee and cap bite
    st.sampled_from([1, 2, 49, 50, 51, 9_999, 10_000, 10_001, AMOUNT_MINOR_MAX - 1, AMOUNT_MINOR_MAX]),
)
BPS = st.one_of(st.integers(min_value=0, max_value=10_000), st.sampled_from([0, 1, 4_999, 5_000, 9_999, 10_000]))
SCHEDULES = st.builds(
    FeeSchedule,
    fee_bps=BPS,
    fixed_minor=st.integers(min_value=0, max_value=10_000),
    min_minor=st.integers(min_value=0, max_value=10_000),
)


@pytest.mark.parametrize(
    ("numerator", "denominator", "expected"),
    [(0, 10, 0), (4, 10, 0), (5, 10, 1), (6, 10, 1), (14, 10, 1), (15, 10, 2), (25, 10, 3)],
)
def test_round_half_up(numerator: int, denominator: int, expected: int) -> None:
    assert round_half_up_div(numerator, denominator) == expected


# (gross, fee_bps, fixed_minor, min_minor, fee, net), each worked out by hand:
# proportional = gross * bps / 10000 rounded half up; fee = max(min, proportional + fixed), then at most gross.
FEE_TABLE = [
    # the ordinary case: 10000 * 290 / 10000 = 290; + 30 = 320
    (10_000, 290, 30, 0, 320, 9_680),
    # half-up boundaries at 1 bps: 4999 / 10000 = 0.4999 -> 0; 5000 / 10000 = 0.5 -> 1; 5001 -> 0.5001 -> 1
    (4_999, 1, 0, 0, 0, 4_999),
    (5_000, 1, 0, 0, 1, 4_999),
    (5_001, 1, 0, 0, 1, 5_000),
    # ties round up, never to even: 15000 / 10000 = 1.5 -> 2; 25000 / 10000 = 2.5 -> 3 (half-even would give 2)
    (15_000, 1, 0, 0, 2, 14_998),
    (25_000, 1, 0, 0, 3, 24_997),
    # 50 * 100 / 10000 = 0.5 -> 1 (half-even would give 0); 49 * 100 / 10000 = 0.49 -> 0; 51 -> 0.51 -> 1
    (50, 100, 0, 0, 1, 49),
    (49, 100, 0, 0, 0, 49),
    (51, 100, 0, 0, 1, 50),
    # 250 * 100 / 10000 = 2.5 -> 3; 150 * 150 / 10000 = 2.25 -> 2; 100 * 150 / 10000 = 1.5 -> 2
    (250, 100, 0, 0, 3, 247),
    (150, 150, 0, 0, 2, 148),
    (100, 150, 0, 0, 2, 98),
    # 50%: 1 * 5000 / 10000 = 0.5 -> 1, the whole gross; 3 * 5000 / 10000 = 1.5 -> 2
    (1, 5_000, 0, 0, 1, 0),
    (3, 5_000, 0, 0, 2, 1),
    # minimum fee: 1000 * 250 / 10000 = 25 < 50 -> 50; with fixed 20: 25 + 20 = 45 < 50 -> 50; fixed 30: 55 >= 50 -> 55
    (1_000, 250, 0, 50, 50, 950),
    (1_000, 250, 20, 50, 50, 950),
    (1_000, 250, 30, 50, 55, 945),
    # fixed fee only: 0 bps -> 0; + 30 = 30
    (10_000, 0, 30, 0, 30, 9_970),
    # capped at gross: 20 * 190 / 10000 = 0.38 -> 0; + 25 = 25 > 20 -> 20
    (20, 190, 25, 0, 20, 0),
    # fixed fee above a one-unit payment: 0 + 30 = 30 > 1 -> 1
    (1, 0, 30, 0, 1, 0),
    # minimum above gross: max(100, 0) = 100 > 40 -> 40
    (40, 0, 0, 100, 40, 0),
    # 0 bps: no fee at all, small or at the maximum amount
    (7, 0, 0, 0, 0, 7),
    (1_000_000_000_000_000, 0, 0, 0, 0, 1_000_000_000_000_000),
    # 10000 bps: the whole gross; 12345 + fixed 1 = 12346 > 12345 -> 12345
    (1, 10_000, 0, 0, 1, 0),
    (12_345, 10_000, 1, 0, 12_345, 0),
    (1_000_000_000_000_000, 10_000, 0, 0, 1_000_000_000_000_000, 0),
    # 9999 bps of 10^15: 999_900_000_000_000 exactly; of 3: 29997 / 10000 = 2.9997 -> 3, the whole gross
    (1_000_000_000_000_000, 9_999, 0, 0, 999_900_000_000_000, 100_000_000_000),
    (3, 9_999, 0, 0, 3, 0),
    # the maximum amount at 2.9% + 30: 29_000_000_000_000 + 30
    (1_000_000_000_000_000, 290, 30, 0, 29_000_000_000_030, 970_999_999_999_970),
    # large ties: 999_999_999_995_000 / 10000 = 99_999_999_999.5 -> 100_000_000_000;
    # 999_999_999_994_999 / 10000 = 99_999_999_999.4999 -> 99_999_999_999
    (999_999_999_995_000, 1, 0, 0, 100_000_000_000, 999_899_999_995_000),
    (999_999_999_994_999, 1, 0, 0, 99_999_999_999, 999_899_999_995_000),
    # (10^15 - 1) * 5000 / 10000 = 499_999_999_999_999.5 -> 500_000_000_000_000
    (999_999_999_999_999, 5_000, 0, 0, 500_000_000_000_000, 499_999_999_999_999),
    # beyond float precision: 999_999_999_995_001 * 9999 = 9_999_999_999_950_010_000 - 999_999_999_995_001
    # = 9_998_999_999_950_014_999; / 10000 = 999_899_999_995_001.4999 -> 999_899_999_995_001
    # (a double has steps of 0.125 there: .4999 becomes .5 and would round up)
    (999_999_999_995_001, 9_999, 0, 0, 999_899_999_995_001, 100_000_000_000),
]


@pytest.mark.parametrize(("gross", "bps", "fixed", "minimum", "fee", "net"), FEE_TABLE)
def test_fee_table_worked_out_by_hand(gross: int, bps: int, fixed: int, minimum: int, fee: int, net: int) -> None:
    assert fee + net == gross  # the table itself is consistent
    assert split(gross, FeeSchedule(bps, fixed, minimum)) == (fee, net)
    assert fee_for(gross, FeeSchedule(bps, fixed, minimum)) == fee


@pytest.mark.parametrize(("gross", "bps", "fixed", "minimum", "fee", "net"), FEE_TABLE)
def test_independent_formulation_agrees_with_the_table(
    gross: int, bps: int, fixed: int, minimum: int, fee: int, net: int
) -> None:
    # The reference the properties below rely on is itself checked against the hand-worked cases.
    assert independent_fee(gross, FeeSchedule(bps, fixed, minimum)) == fee


@PROPERTY
@given(st.integers(min_value=10**14, max_value=AMOUNT_MINOR_MAX), st.integers(min_value=5_000, max_value=10_000))
def test_large_proportional_fees_are_exact(gross: int, bps: int) -> None:
    # gross * bps reaches 10^19: past 2^53 (and past 2^63), where floats or 64-bit integers would round.
    assert fee_for(gross, FeeSchedule(bps, 0, 0)) == independent_fee(gross, FeeSchedule(bps, 0, 0))


@PROPERTY
@given(AMOUNTS, SCHEDULES)
def test_fee_equals_the_exact_rational_formulation(gross: int, schedule: FeeSchedule) -> None:
    fee, net = split(gross, schedule)
    assert fee == independent_fee(gross, schedule)
    assert fee + net == gross
    assert 0 <= fee <= gross
    if schedule.min_minor < fee < gross:  # neither clamp applied: within half a unit of the exact rate
        exact = Fraction(gross * schedule.fee_bps, 10_000)
        assert abs(fee - schedule.fixed_minor - exact) <= Fraction(1, 2)


# Basis points that divide 5000 (and so 10000): gross = (10000 q + 5000) / bps is a whole amount whose
# proportional fee is exactly q + 1/2, a tie.
TIE_BPS = [d for d in range(1, 5_001) if 5_000 % d == 0]


@PROPERTY
@given(st.sampled_from(TIE_BPS), st.integers(min_value=0, max_value=10**10))
def test_exact_ties_round_up(bps: int, q: int) -> None:
    gross = (10_000 * q + 5_000) // bps
    assert gross * bps == 10_000 * q + 5_000
    if gross > AMOUNT_MINOR_MAX:
        return
    # No fixed fee, no minimum: the fee is the rounded proportional part, q + 1 (never q).
    assert fee_for(gross, FeeSchedule(bps, 0, 0)) == min(q + 1, gross)


@PROPERTY
@given(st.integers(min_value=1, max_value=10**12), st.integers(min_value=1, max_value=10**12), SCHEDULES)
def test_fee_is_monotonic_in_gross(a: int, b: int, schedule: FeeSchedule) -> None:
    low, high = sorted((a, b))
    if fee_for(low, schedule) < low:  # below the cap the fee never falls as gross grows
        assert fee_for(low, schedule) <= fee_for(high, schedule)


# -- currencies: amounts and schedules are minor units of the payment's currency --------------------------

ZERO_DECIMAL = sorted(c for c, digits in MINOR_UNIT_DIGITS.items() if digits == 0)


def test_fees_do_not_depend_on_the_currency_exponent() -> None:
    # By design the fee is a function of the gross amount in minor units and the schedule alone: the
    # schedule (merchant_fee_schedules, per merchant and currency) is itself in that currency's minor
    # units, so a yen schedule is in yen and a euro schedule in cents. Nothing scales by the exponent.
    assert list(inspect.signature(fee_for).parameters) == ["gross_minor", "schedule"]
    assert list(inspect.signature(split).parameters) == ["gross_minor", "schedule"]
    assert ZERO_DECIMAL == ["JPY", "KRW"]


@pytest.mark.parametrize(
    ("gross", "bps", "fixed", "minimum", "fee"),
    [
        # 1000 yen at 2.9% + 30 yen: 29 + 30 = 59 yen (not 0.29 yen rounded, not 2900 "cents")
        (1_000, 290, 30, 0, 59),
        # 50 won at 1%: 0.5 won -> 1 won; 149 won at 1%: 1.49 -> 1 won
        (50, 100, 0, 0, 1),
        (149, 100, 0, 0, 1),
        # 10^15 yen (the maximum amount) at 1.5%: 15_000_000_000_000 yen
        (1_000_000_000_000_000, 150, 0, 0, 15_000_000_000_000),
        # a 100-yen minimum on a 99-yen payment: capped at 99
        (99, 0, 0, 100, 99),
    ],
)
@pytest.mark.parametrize("currency", ZERO_DECIMAL)
def test_zero_decimal_fees_by_hand(currency: str, gross: int, bps: int, fixed: int, minimum: int, fee: int) -> None:
    assert split(gross, FeeSchedule(bps, fixed, minimum)) == (fee, gross - fee)


@PROPERTY
@given(st.sampled_from(ZERO_DECIMAL), AMOUNTS, SCHEDULES)
def test_zero_decimal_invariants_up_to_the_maximum_amount(currency: str, gross: int, schedule: FeeSchedule) -> None:
    assert 1 <= gross <= AMOUNT_MINOR_MAX
    fee, net = split(gross, schedule)
    assert fee + net == gross
    assert 0 <= fee <= gross
    assert fee == independent_fee(gross, schedule)


@pytest.mark.parametrize("currency", ["KWD", "BHD", "OMR", "JOD", "TND"])
def test_three_decimal_currencies_are_refused_at_decode(currency: str) -> None:
    # No currency with three minor-unit digits is accepted: a payment in one is a dead letter
    # (currency/enum), so no fee is ever computed on fils or baisa. Adding one to MINOR_UNIT_DIGITS must
    # revisit this test (and AMOUNT_MINOR_MAX, which would then be 10^12 whole dinars).
    assert max(MINOR_UNIT_DIGITS.values()) == 2
    assert currency not in MINOR_UNIT_DIGITS
    raw = (
        b'{"schema":"payment.requested","v":1,"payment_id":"p-3dp","payer_account":"payer-1",'
        b'"merchant_id":"m-1","amount_minor":1000,"currency":"' + currency.encode() + b'","country":"KW",'
        b'"method":"card","created_at":"2026-01-01T00:00:00Z"}'
    )
    decoded = Decoder(PaymentRequested).decode(raw)
    assert isinstance(decoded, Invalid)
    assert (decoded.field, decoded.rule) == ("currency", "enum")
