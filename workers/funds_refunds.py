"""The funds stage's reads and writes for refunds: the payments they act on, their records, their events.

Lock order, the one of every funds transaction: the customer accounts
(sorted), then the refunded payments' rows (by payment id). All refunds of a
payment credit its payer, so they are serialised by the payer's account lock
whichever consumer handles them; the running total is re-read under that lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from paystream.stage.contract import Output
from schemas.refunds import (
    PaymentRefunded,
    RefundCleared,
    payment_refunded_event_id,
    refund_cleared_event_id,
)
from topology.topics import PAYMENTS_CLEARED, PAYMENTS_OUTCOMES
from workers.account_rules import AccountDecision
from workers.refund_rules import PaymentState


async def lock_refunded_payments(connection: Any, payment_ids: Sequence[str]) -> dict[str, PaymentState]:
    """The payments these refunds name, locked (the accounts must be locked first)."""
    if not payment_ids:
        return {}
    rows = await connection.fetch(
        """SELECT payment_id, payer_account, merchant_id, currency, status, gross_minor, fee_minor, refunded_minor,
                  created_at
           FROM payments WHERE payment_id = ANY($1::text[]) ORDER BY payment_id FOR UPDATE""",
        sorted(set(payment_ids)),
    )
    return {
        row["payment_id"]: PaymentState(
            row["payment_id"],
            row["payer_account"],
            row["merchant_id"],
            row["currency"].strip(),
            row["status"],
            row["gross_minor"],
            row["fee_minor"],
            row["refunded_minor"],
            row["created_at"],
        )
        for row in rows
    }


async def store_refunds(
    connection: Any, decisions: Sequence[AccountDecision], payments: dict[str, PaymentState], now: datetime
) -> None:
    """One `refunds` row per refund that moved money (its journal is posted with the operations), and the totals."""
    moved = [d for d in decisions if d.kind == "refund" and d.succeeded]
    if not moved:
        return
    await connection.execute(
        """INSERT INTO refunds (refund_id, payment_id, account_id, merchant_id, currency, amount_minor,
                                fee_back_minor, net_back_minor, refunded_after_minor, journal_id, event_time,
                                refunded_at)
           SELECT v.id, v.payment, v.account, p.merchant_id, p.currency, v.amount, v.fee_back, v.amount - v.fee_back,
                  v.after, v.journal, p.created_at, $8
           FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::text[])
                AS v(id, payment, account, amount, fee_back, after, journal)
           JOIN payments p ON p.payment_id = v.payment""",
        [d.request_id for d in moved],
        [d.payment_id for d in moved],
        [d.account_id for d in moved],
        [d.amount_minor for d in moved],
        [d.fee_back_minor for d in moved],
        [d.refunded_after_minor for d in moved],
        [d.journal_id for d in moved],
        now,
    )
    refunded = sorted({d.payment_id for d in moved if d.payment_id})
    await connection.execute(
        """UPDATE payments AS p SET refunded_minor = v.refunded, updated_at = $3
           FROM unnest($1::text[], $2::bigint[]) AS v(id, refunded) WHERE p.payment_id = v.id""",
        refunded,
        [payments[p].refunded_minor for p in refunded],
        now,
    )


async def refund_outputs(connection: Any, decisions: Sequence[AccountDecision]) -> dict[tuple[str, str], list[Output]]:
    """By ("refund", refund id): `payment.refunded` for downstream and `refund.cleared` for settlement, from the
    stored rows (the same events again for a repeated refund)."""
    refund_ids = [d.request_id for d in decisions if d.kind == "refund" and d.succeeded]
    if not refund_ids:
        return {}
    rows = await connection.fetch(
        """SELECT r.*, p.payer_account, p.gross_minor AS captured_minor, q.request->>'reason' AS reason
           FROM refunds r JOIN payments p USING (payment_id)
           JOIN account_requests q ON q.kind = 'refund' AND q.request_id = r.refund_id
           WHERE r.refund_id = ANY($1::text[])""",
        refund_ids,
    )
    outputs: dict[tuple[str, str], list[Output]] = {}
    for row in rows:
        currency = row["currency"].strip()
        outputs[("refund", row["refund_id"])] = [
            Output(
                PAYMENTS_OUTCOMES,
                row["payment_id"],
                PaymentRefunded(
                    event_id=payment_refunded_event_id(row["payment_id"], row["refund_id"]),
                    payment_id=row["payment_id"],
                    refund_id=row["refund_id"],
                    status="refunded" if row["refunded_after_minor"] == row["captured_minor"] else "partially_refunded",
                    payer_account=row["payer_account"],
                    merchant_id=row["merchant_id"],
                    currency=currency,
                    amount_minor=row["amount_minor"],
                    refunded_minor=row["refunded_after_minor"],
                    captured_minor=row["captured_minor"],
                    reason=row["reason"],
                    occurred_at=row["refunded_at"],
                ),
            ),
            Output(
                PAYMENTS_CLEARED,
                row["merchant_id"],
                RefundCleared(
                    event_id=refund_cleared_event_id(row["refund_id"]),
                    refund_id=row["refund_id"],
                    payment_id=row["payment_id"],
                    merchant_id=row["merchant_id"],
                    currency=currency,
                    gross_minor=row["amount_minor"],
                    fee_back_minor=row["fee_back_minor"],
                    net_back_minor=row["net_back_minor"],
                    journal_id=row["journal_id"],
                    event_time=row["event_time"],
                    cleared_at=row["refunded_at"],
                ),
            ),
        ]
    return outputs
