"""Settlement results for downstream systems (payouts, merchant statements)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from schemas.money import CurrencyCode
from schemas.payments import Event, IdText, RefText, UtcTime

# Version 2: refunds are taken off a batch, so its totals may be negative
# (a debit to the merchant), and it counts its refunds.
SignedSumMinor = Annotated[int, msgspec.Meta(ge=-(2**63 - 1), le=2**63 - 1)]


class SettlementBatchClosed(Event, frozen=True, kw_only=True):
    """A batch of one merchant, currency and cycle closed with fixed totals.

    Totals are its payments' sums minus its refunds' sums: `net_minor` below
    zero means the merchant owes the platform that much (its payout journal
    runs the other way). `batch_id` is stable: a consumer that keys on it sees
    each batch once even when the event is delivered again.
    """

    schema: Literal["settlement.batch_closed"] = "settlement.batch_closed"
    v: Literal[2] = 2
    event_id: RefText
    batch_id: RefText
    merchant_id: IdText
    currency: CurrencyCode
    cycle_start: UtcTime
    cycle_end: UtcTime
    item_count: Annotated[int, msgspec.Meta(ge=0)]
    refund_count: Annotated[int, msgspec.Meta(ge=0)]
    gross_minor: SignedSumMinor
    fee_minor: SignedSumMinor
    net_minor: SignedSumMinor
    payout_journal_id: RefText | None
    closed_at: UtcTime


def batch_closed_event_id(batch_id: str) -> str:
    return f"{batch_id}:closed"
