"""Contract versions paystream no longer writes, kept so that retained events can still be read.

A topic keeps its events for its retention (30 days for outcomes), so after
an upgrade a consumer reading from the beginning meets the old version first.
`paystream follow` and `paystream.downstream.follow` decode these next to the
current ones (the decoder picks by `schema` and `v`). Their JSON Schema files
stay in `schemas/json/` unchanged (`schemas.registry.RETIRED_FILES`).
"""

from __future__ import annotations

from typing import Literal

from schemas.money import CurrencyCode, PositiveAmountMinor
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
