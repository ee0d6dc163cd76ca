"""Funds' decision on a refund, as a pure function over the payment and the payer's account as the batch sees them.

Refunds of one payment come from its payer, on the payer's partition, and
are decided one after the other against the payment's running total
refunded, under the lock of the payer's account row: their total never
passes what was captured, whatever their number, order or concurrency, and
a repeated refund id is answered from what was stored (never decided twice).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from paystream.ledger import Journal, fee_revenue_account, journal, merchant_pending_account
from schemas.refunds import RefundRequested, refund_journal_id
from workers.refunds import RefundSplit, refund_split

if TYPE_CHECKING:  # account_rules calls into this module
    from workers.account_rules import AccountState

# A payment's statuses with money captured: what can be refunded.
CAPTURED = ("cleared", "settled")


@dataclass(slots=True)
class PaymentState:
    """A payment's row as funds reads it for a refund; `refunded_minor` grows as refunds pass."""

    payment_id: str
    payer_account: str
    merchant_id: str
    currency: str
    status: str
    gross_minor: int | None
    fee_minor: int | None
    refunded_minor: int
    event_time: object  # the payment's created_at, carried to settlement

    @property
    def refundable_minor(self) -> int:
        return (self.gross_minor or 0) - self.refunded_minor


def refund_refusal(
    request: RefundRequested, payment: PaymentState | None, accounts: dict[str, AccountState]
) -> tuple[str | None, RefundSplit | None, Journal | None]:
    """Why the refund is declined, or (None, its split, its journal), with the payment and account updated."""
    if payment is None:
        return f"unknown_payment: no payment {request.payment_id}", None, None
    if payment.payer_account != request.account_id:
        return (
            f"payment_not_of_account: payment {request.payment_id} is not of account {request.account_id}",
            None,
            None,
        )
    if payment.status not in CAPTURED:
        return f"not_captured: payment {request.payment_id} is {payment.status}", None, None
    if request.currency != payment.currency:
        return f"currency_mismatch: the payment is in {payment.currency}, the refund in {request.currency}", None, None
    if payment.refundable_minor == 0:
        return f"fully_refunded: payment {request.payment_id} was refunded in full", None, None
    if request.amount_minor > payment.refundable_minor:
        return (
            f"exceeds_refundable: {request.amount_minor} > {payment.refundable_minor} left of {payment.gross_minor}",
            None,
            None,
        )
    account = accounts.get(request.account_id)
    if account is None or account.kind != "customer":
        return f"unknown_account: {request.account_id} cannot be credited", None, None
    if account.status != "open":
        return f"account_closed: {request.account_id} is {account.status}", None, None
    assert payment.gross_minor is not None and payment.fee_minor is not None
    split = refund_split(payment.gross_minor, payment.fee_minor, payment.refunded_minor, request.amount_minor)
    payment.refunded_minor += request.amount_minor
    account.balance_minor += request.amount_minor
    posted = journal(
        refund_journal_id(request.request_id),
        "refund",
        payment.currency,
        [
            (request.account_id, request.amount_minor),
            (merchant_pending_account(payment.merchant_id, payment.currency), -split.net_back_minor),
            (fee_revenue_account(payment.currency), -split.fee_back_minor),
        ],
        payment_id=payment.payment_id,
        request_id=request.request_id,
    )
    return None, split, posted
