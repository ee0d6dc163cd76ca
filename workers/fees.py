"""Merchant fees in integer minor units.

fee = clamp(round_half_up(gross * fee_bps / 10_000) + fixed_minor, low=min_minor, high=gross)

Rounding is half-up on the exact rational value (integer arithmetic only, no
floats): 0.5 of a minor unit rounds up, in the platform's favour by at most
half a minor unit. The fee never exceeds the gross amount, so net >= 0.
"""

from __future__ import annotations

from dataclasses import dataclass

BPS_PER_UNIT = 10_000


@dataclass(frozen=True, slots=True)
class FeeSchedule:
    fee_bps: int
    fixed_minor: int
    min_minor: int

    def __post_init__(self) -> None:
        assert 0 <= self.fee_bps <= BPS_PER_UNIT, self.fee_bps
        assert self.fixed_minor >= 0 and self.min_minor >= 0


def round_half_up_div(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half up, for non-negative integers."""
    assert numerator >= 0 and denominator > 0
    return (2 * numerator + denominator) // (2 * denominator)


def fee_for(gross_minor: int, schedule: FeeSchedule) -> int:
    assert gross_minor > 0, gross_minor
    proportional = round_half_up_div(gross_minor * schedule.fee_bps, BPS_PER_UNIT)
    fee = max(schedule.min_minor, proportional + schedule.fixed_minor)
    return min(fee, gross_minor)


def split(gross_minor: int, schedule: FeeSchedule) -> tuple[int, int]:
    """(fee, net) with fee + net == gross."""
    fee = fee_for(gross_minor, schedule)
    net = gross_minor - fee
    assert fee >= 0 and net >= 0 and fee + net == gross_minor
    return fee, net
