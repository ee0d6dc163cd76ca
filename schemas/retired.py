"""Contract versions paystream no longer writes, kept so that retained events can still be read.

A topic keeps its events for its retention (30 days for outcomes), so after
an upgrade a consumer reading from the beginning meets the old version first.
`paystream follow` and `paystream.downstream.follow` decode these next to the
current ones (the decoder picks by `schema` and `v`). Their JSON Schema files
stay in `schemas/json/` unchanged (`schemas.registry.RETIRED_FILES`).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from schemas.money import AmountSumMinor, CurrencyCode, PositiveAmountMinor
from schemas.payments import Event, IdText, Reasons, RefText, UtcTime


class PaymentOutcomeV1(Event, frozen=True, kw_only=True):
    """payment.outcome v1 (until manual capture): statuses rejected, declined, failed, cleared, settled."""

    schema: Literal["payment.outcome"] = "payment.outcome"
    v: Literal[1] = 1
    event_id: RefText
    payment_id: IdText
    status: Literal["rejected", "declined", "failed", "cleared", "settled"]
    stage: Literal["risk", "funds", "clearing", "settlement"]
    reasons: Reasons
    payer_account: IdText
    merchant_id: IdText
    amount_minor: PositiveAmountMinor
    currency: CurrencyCode
    created_at: UtcTime
    occurred_at: UtcTime
    batch_id: RefText | None = None


class SettlementBatchClosedV1(Event, frozen=True, kw_only=True):
    """settlement.batch_closed v1 (until refunds): totals never negative, no refund count."""

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
