"""What the funds stage reads and writes for payments' holds: approved requests, holds, payer accounts.

Kept apart from `workers.funds`, which decides and answers. Lock order for
every writer of a customer account: the accounts (sorted, FOR UPDATE) first,
then holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from paystream.db.arrays import join_reasons
from schemas.payments import PaymentRequested
from workers.account_rules import AccountState, hold_refusal
from workers.capture_rules import hold_deadline
from workers.funds_capture import hold_id_for


@dataclass(frozen=True, slots=True)
class HoldDecision:
    payment_id: str
    held: bool
    reasons: tuple[str, ...]
    decided_at: datetime


def decide_holds(
    payments: Sequence[PaymentRequested], accounts: dict[str, AccountState], now: datetime
) -> list[HoldDecision]:
    """Pure: decide each hold in order, updating `accounts[...].held_minor` as holds are placed."""
    decisions = []
    for payment in payments:
        reason = hold_refusal(payment, accounts)
        decisions.append(HoldDecision(payment.payment_id, reason is None, (reason,) if reason else (), now))
    return decisions


async def approved_requests(connection: Any, payment_ids: list[str]) -> dict[str, PaymentRequested]:
    """The requests risk stored and approved: the only source of what a hold is for."""
    if not payment_ids:
        return {}
    rows = await connection.fetch(
        """SELECT payment_id, request FROM risk_decisions
           WHERE payment_id = ANY($1::text[]) AND decision = 'approved'""",
        payment_ids,
    )
    return {row["payment_id"]: msgspec.convert(row["request"], PaymentRequested) for row in rows}


async def stored_holds(connection: Any, payment_ids: list[str]) -> dict[str, HoldDecision]:
    if not payment_ids:
        return {}
    rows = await connection.fetch(
        "SELECT payment_id, status, reasons, created_at FROM holds WHERE payment_id = ANY($1::text[])",
        payment_ids,
    )
    return {
        row["payment_id"]: HoldDecision(
            row["payment_id"], row["status"] != "declined", tuple(row["reasons"]), row["created_at"]
        )
        for row in rows
    }


async def lock_accounts(connection: Any, account_ids: list[str]) -> dict[str, AccountState]:
    # Sorted ids and FOR UPDATE: one lock order for every writer, no deadlocks.
    rows = await connection.fetch(
        """SELECT account_id, currency, status, balance_minor, held_minor FROM accounts
           WHERE account_id = ANY($1::text[]) AND kind = 'customer'
           ORDER BY account_id FOR UPDATE""",
        account_ids,
    )
    return {
        row["account_id"]: AccountState(
            row["account_id"], row["currency"].strip(), row["status"], row["balance_minor"], row["held_minor"]
        )
        for row in rows
    }


async def store_holds(
    connection: Any,
    payments: list[PaymentRequested],
    decisions: list[HoldDecision],
    now: datetime,
    hold_expiry_s_max: int,
) -> None:
    """The holds and the payments' statuses (the accounts' held amounts: `write_accounts`)."""
    await connection.execute(
        """
        INSERT INTO holds (payment_id, hold_id, account_id, amount_minor, currency, status, reasons,
                           created_at, updated_at, expires_at)
        SELECT v.id, v.hold, v.account, v.amount, v.currency, v.status,
               string_to_array(v.reasons, chr(31)), $8, $8, CASE WHEN v.status = 'held' THEN v.expires END
        FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[],
                    $9::timestamptz[])
             AS v(id, hold, account, amount, currency, status, reasons, expires)
        """,
        [p.payment_id for p in payments],
        [hold_id_for(p.payment_id) for p in payments],
        [p.payer_account for p in payments],
        [p.amount_minor for p in payments],
        [p.currency for p in payments],
        ["held" if d.held else "declined" for d in decisions],
        [join_reasons(d.reasons) for d in decisions],
        now,
        [hold_deadline(p, hold_expiry_s_max) for p in payments],
    )
    await connection.execute(
        """
        UPDATE payments AS p SET
            status = CASE WHEN NOT v.held THEN 'declined' WHEN v.manual THEN 'authorized' ELSE 'held' END,
            capture_mode = CASE WHEN v.manual THEN 'manual' ELSE 'automatic' END,
            hold_id = CASE WHEN v.held THEN v.hold END,
            held_at = CASE WHEN v.held THEN $5::timestamptz END,
            decline_reasons = string_to_array(v.reasons, chr(31)),
            declined_at = CASE WHEN v.held THEN NULL ELSE $5::timestamptz END,
            updated_at = $5
        FROM unnest($1::text[], $2::bool[], $3::text[], $4::text[], $6::bool[]) AS v(id, held, hold, reasons, manual)
        WHERE p.payment_id = v.id AND p.status = 'approved'
        """,
        [d.payment_id for d in decisions],
        [d.held for d in decisions],
        [hold_id_for(d.payment_id) for d in decisions],
        [join_reasons(d.reasons) for d in decisions],
        now,
        [p.capture == "manual" for p in payments],
    )
