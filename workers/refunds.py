"""How a refund splits between the merchant's net and the platform's fee: the fee goes back in proportion.

Policy (docs/design-decisions.md §14): a refund of `r` out of a captured
`gross` returns the share `r / gross` of the fee the platform kept, so a full
refund returns the whole fee and the merchant is never charged for a sale
that did not stand (Alipay's rule; Stripe's is to keep the fee). The share is
computed on the running total refunded, not per refund, so partial refunds in
any number and order return exactly the fee a single refund of their sum
would: rounding never accumulates.

    fee_back(r) = share(refunded_before + r) - share(refunded_before)
    share(t)    = round_half_up(fee * t / gross)
    net_back(r) = r - fee_back(r)

Integer arithmetic only.
"""

from __future__ import annotations

from dataclasses import dataclass

from workers.fees import round_half_up_div


@dataclass(frozen=True, slots=True)
class RefundSplit:
    """What one refund takes back: `net_back` from the merchant, `fee_back` from the platform's fees."""

    amount_minor: int
    fee_back_minor: int
    net_back_minor: int


def fee_share(fee_minor: int, gross_minor: int, refunded_minor: int) -> int:
    """The part of the fee that `refunded_minor` of `gross_minor` accounts for, rounded half up."""
    assert gross_minor > 0 and 0 <= fee_minor <= gross_minor and 0 <= refunded_minor <= gross_minor
    return round_half_up_div(fee_minor * refunded_minor, gross_minor)


def refund_split(gross_minor: int, fee_minor: int, refunded_before_minor: int, amount_minor: int) -> RefundSplit:
    """Split a refund of `amount_minor` given what was refunded before; the caller checks it fits."""
    assert amount_minor > 0 and refunded_before_minor + amount_minor <= gross_minor
    fee_back = fee_share(fee_minor, gross_minor, refunded_before_minor + amount_minor) - fee_share(
        fee_minor, gross_minor, refunded_before_minor
    )
    net_back = amount_minor - fee_back
    assert 0 <= fee_back <= amount_minor and net_back >= 0
    return RefundSplit(amount_minor, fee_back, net_back)
