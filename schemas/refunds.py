"""Refunds: the request upstream publishes, the event settlement batches, the event downstream reads.

A refund gives a captured payment's money back to its payer, in part or in
full, any number of times until the captured amount is used up. It travels on
the payer's request topic (key = the payer's account), so funds decides it in
order with the account's other requests, against the payment's running total
refunded (docs/design-decisions.md §16).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from schemas.money import CurrencyCode, NonNegativeAmountMinor, PositiveAmountMinor
from schemas.payments import Event, IdText, MetadataMap, RefText, UtcTime

RefundReason = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class RefundRequested(Event, frozen=True, kw_only=True):
    """Give `amount_minor` of a captured payment back to its payer; `request_id` is the refund id."""

    schema: Literal["refund.requested"] = "refund.requested"
    v: Literal[1] = 1
    request_id: IdText
    account_id: IdText
    payment_id: IdText
    amount_minor: PositiveAmountMinor
    currency: CurrencyCode
    reason: RefundReason
    created_at: UtcTime
    metadata: MetadataMap = msgspec.field(default_factory=dict)


class RefundCleared(Event, frozen=True, kw_only=True):
    """A refund's money moved: settlement takes `net_back_minor` off the merchant's batch (key = merchant).

    `gross_minor` is what the payer got back, `fee_back_minor` what the
    platform returned of its fee, `net_back_minor` what the merchant gives back:
    gross = fee_back + net_back.
    """

    schema: Literal["refund.cleared"] = "refund.cleared"
    v: Literal[1] = 1
    event_id: RefText
    refund_id: IdText
    payment_id: IdText
    merchant_id: IdText
    currency: CurrencyCode
    gross_minor: PositiveAmountMinor
    fee_back_minor: NonNegativeAmountMinor
    net_back_minor: NonNegativeAmountMinor
    journal_id: RefText
    # The payment's event time: the batch that holds the payment takes its refunds while it is open.
    event_time: UtcTime
    cleared_at: UtcTime


class PaymentRefunded(Event, frozen=True, kw_only=True):
    """One refund of a payment, for downstream (on payments.outcomes, key = payment id).

    `status` is where the payment stands after it: `partially_refunded` or
    `refunded` (nothing left to refund). One event per refund: its id names the
    refund, so a second partial refund is a new event, a repeated one the same.
    """

    schema: Literal["payment.refunded"] = "payment.refunded"
    v: Literal[1] = 1
    event_id: RefText
    payment_id: IdText
    refund_id: IdText
    status: Literal["partially_refunded", "refunded"]
    payer_account: IdText
    merchant_id: IdText
    currency: CurrencyCode
    amount_minor: PositiveAmountMinor
    refunded_minor: PositiveAmountMinor
    captured_minor: PositiveAmountMinor
    reason: RefundReason
    occurred_at: UtcTime


def refund_cleared_event_id(refund_id: str) -> str:
    return f"refund:{refund_id}:cleared"


def payment_refunded_event_id(payment_id: str, refund_id: str) -> str:
    return f"{payment_id}:refund:{refund_id}"


def refund_journal_id(refund_id: str) -> str:
    return f"refund:{refund_id}"
