"""Money arithmetic written independently of the code under test, for tests to compare with."""

from __future__ import annotations

import math
from fractions import Fraction

from workers.fees import FeeSchedule


def independent_fee(gross: int, schedule: FeeSchedule) -> int:
    """The documented rule in exact rationals: clamp(half_up(gross * bps / 10000) + fixed, min, gross).

    Rounding is done on the exact Fraction (a half rounds up), never with the
    integer trick `workers.fees` uses.
    """
    exact = Fraction(gross) * Fraction(schedule.fee_bps, 10_000)
    whole = math.floor(exact)
    proportional = whole + 1 if exact - whole >= Fraction(1, 2) else whole
    fee = proportional + schedule.fixed_minor
    if fee < schedule.min_minor:
        fee = schedule.min_minor
    if fee > gross:
        fee = gross
    return fee
