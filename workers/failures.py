"""Ending a payment that cannot go on: release its open hold, mark it `failed`, tell downstream.

Used by funds and clearing when a record of theirs is isolated as poison, and
by clearing when a payment cannot be captured for a business reason (no fee
schedule). A hold is never left open for a payment nobody will capture.

Idempotent: a payment already failed is not changed again, and its stored
`failed` outcome is returned again, so a replayed batch re-sends the same event.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from paystream.stage.contract import Output
from workers.outcomes import outcome_from_row

REASON_CHARS_MAX = 200

# (payer account, merchant, amount, currency): what a record says its payment is.
Identity = tuple[str, str, int, str]


async def fail_payments(
    connection: Any,
    reasons: Mapping[str, str],
    identities: Mapping[str, Identity],
    stage: Literal["funds", "clearing"],
    now: datetime,
) -> list[Output]:
    """Release the open holds of `reasons`' payments and mark them failed; returns their `failed` outcomes.

    Only a payment whose stored identity is the one its record claims is
    ended: a forged or conflicting record must not fail somebody else's payment.
    """
    if not reasons:
        return []
    candidates = sorted(reasons)
    stored = await connection.fetch(
        """SELECT payment_id, payer_account, merchant_id, amount_minor, currency FROM payments
           WHERE payment_id = ANY($1::text[]) ORDER BY payment_id FOR UPDATE""",
        candidates,
    )
    payment_ids = [
        row["payment_id"]
        for row in stored
        if identities.get(row["payment_id"])
        == (row["payer_account"], row["merchant_id"], row["amount_minor"], row["currency"].strip())
    ]
    if not payment_ids:
        return []
    released = await connection.fetch(
        """UPDATE holds SET status = 'released', released_minor = amount_minor, reasons = reasons || $3::text[],
                  updated_at = $2
           WHERE payment_id = ANY($1::text[]) AND status IN ('held', 'capturing')
           RETURNING account_id, amount_minor""",
        payment_ids,
        now,
        ["released: the payment failed"],
    )
    per_account: dict[str, int] = {}
    for row in released:
        per_account[row["account_id"]] = per_account.get(row["account_id"], 0) + row["amount_minor"]
    if per_account:
        accounts = sorted(per_account)
        # Sorted ids: one lock order for every writer of customer rows.
        await connection.execute(
            """UPDATE accounts AS a SET held_minor = a.held_minor - v.amount
               FROM unnest($1::text[], $2::bigint[]) AS v(id, amount) WHERE a.account_id = v.id""",
            accounts,
            [per_account[a] for a in accounts],
        )
    await connection.execute(
        """UPDATE payments AS p SET status = 'failed', failure_reasons = ARRAY[v.reason],
                  failed_at = $3, updated_at = $3
           FROM unnest($1::text[], $2::text[]) AS v(id, reason)
           WHERE p.payment_id = v.id AND p.status IN ('approved', 'held', 'authorized')""",
        payment_ids,
        [reasons[p][:REASON_CHARS_MAX] for p in payment_ids],
        now,
    )
    rows = await connection.fetch(
        """SELECT payment_id, payer_account, merchant_id, amount_minor, currency, created_at,
                  failure_reasons, failed_at
           FROM payments WHERE payment_id = ANY($1::text[]) AND status = 'failed'
           ORDER BY payment_id""",
        payment_ids,
    )
    return [outcome_from_row(row, "failed", stage, row["failed_at"], row["failure_reasons"]) for row in rows]
