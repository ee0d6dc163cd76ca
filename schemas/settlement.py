"""Settlement results for downstream systems (payouts, merchant statements)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from schemas.money import AmountSumMinor, CurrencyCode
from schemas.payments import Event, IdText, RefText, UtcTime


class SettlementBatchClosed(Event, frozen=True, kw_only=True):
    """A batch of one merchant, currency and cycle closed with fixed totals.

    `batch_id` is stable: a consumer that keys on it sees each batch once even
    when the event is delivered again.
    """

    schema: Literal["settlement.batch_closed"] = "settlement.batch_closed"
    v: Literal[1] = 1
    event_id: RefText
    batch_id: RefText
    merchant_id: IdText
    currency: CurrencyCode
    cycle_start: UtcTime
    cycle_end: UtcTime
    item_count: Annotated[int, msgspec.Meta(ge=0)]
    gross_minor: AmountSumMinor
    fee_minor: AmountSumMinor
    net_minor: AmountSumMinor
    payout_journal_id: RefText | None
    closed_at: UtcTime


def batch_closed_event_id(batch_id: str) -> str:
    return f"{batch_id}:closed"
