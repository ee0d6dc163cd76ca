"""The funds stage's reads and writes for manual capture: the holds captures and voids act on, and expiry.

Lock order, the same for every writer of an account: the customer accounts
(sorted), then the holds (by payment id). A capture, a void and the expiry of
one hold therefore run one after the other, and each re-reads the hold's
status under the lock: whichever commits first ends the hold, the others see
it ended. Expiry is funds' timer work (`expire_due_holds`): driven by time,
not by traffic, so a hold expires on a quiet partition too; its outcomes
leave through an outbox mark (`holds.expiry_published_at`), so a crash
between the commit and the produce re-sends them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from paystream.stage.contract import Output, Tick
from schemas.payments import FundsHeld, PaymentRequested, funds_event_id
from topology.topics import FUNDS_HELD
from workers.account_rules import AccountDecision
from workers.capture_rules import HoldState
from workers.outcomes import outcome_from_row

EXPIRE_HOLDS_MAX = 1_000  # per tick: bounded work whatever the backlog
PUBLISH_EXPIRED_MAX = 5_000

_PAYMENT_COLUMNS = "p.payment_id, p.payer_account, p.merchant_id, p.amount_minor, p.currency, p.created_at"


def hold_id_for(payment_id: str) -> str:
    return f"hold:{payment_id}"


async def lock_payment_holds(connection: Any, payment_ids: Sequence[str]) -> dict[str, HoldState]:
    """The holds of these payments, locked (the accounts must be locked first)."""
    if not payment_ids:
        return {}
    rows = await connection.fetch(
        """SELECT h.payment_id, h.account_id, h.amount_minor, h.currency, h.status, h.expires_at, h.capture_minor,
                  p.capture_mode
           FROM holds h JOIN payments p USING (payment_id)
           WHERE h.payment_id = ANY($1::text[])
           ORDER BY h.payment_id FOR UPDATE OF h""",
        sorted(set(payment_ids)),
    )
    return {
        row["payment_id"]: HoldState(
            row["payment_id"],
            row["account_id"],
            row["amount_minor"],
            row["currency"].strip(),
            row["status"],
            row["capture_mode"],
            row["expires_at"],
            row["capture_minor"],
        )
        for row in rows
    }


async def store_hold_changes(connection: Any, holds: dict[str, HoldState], now: datetime) -> None:
    """Captures accepted (`capturing`, for clearing) and voids (`voided`, released), with their payments."""
    capturing = [h for h in holds.values() if h.changed and h.status == "capturing"]
    voided = [h for h in holds.values() if h.changed and h.status == "voided"]
    if capturing:
        await connection.execute(
            """UPDATE holds AS h SET status = 'capturing', capture_minor = v.amount, updated_at = $3
               FROM unnest($1::text[], $2::bigint[]) AS v(id, amount) WHERE h.payment_id = v.id""",
            [h.payment_id for h in capturing],
            [h.capture_minor for h in capturing],
            now,
        )
        await connection.execute(
            """UPDATE payments SET status = 'held', updated_at = $2
               WHERE payment_id = ANY($1::text[]) AND status = 'authorized'""",
            [h.payment_id for h in capturing],
            now,
        )
    if voided:
        ids = [h.payment_id for h in voided]
        await connection.execute(
            """UPDATE holds SET status = 'voided', released_minor = amount_minor, updated_at = $2
               WHERE payment_id = ANY($1::text[])""",
            ids,
            now,
        )
        await connection.execute(
            """UPDATE payments SET status = 'voided', ended_at = $2, updated_at = $2
               WHERE payment_id = ANY($1::text[]) AND status = 'authorized'""",
            ids,
            now,
        )


async def hold_outputs(connection: Any, decisions: Sequence[AccountDecision]) -> dict[tuple[str, str], list[Output]]:
    """By (kind, request id), what a succeeded capture or void emits besides its account outcome, from stored rows.

    A capture: `funds.held` with the amount to capture, for clearing. A void:
    the payment's `voided` outcome. The same again for a repeated request.
    """
    captured = [d for d in decisions if d.succeeded and d.kind == "capture" and d.payment_id]
    voided = [d for d in decisions if d.succeeded and d.kind == "void" and d.payment_id]
    outputs: dict[tuple[str, str], list[Output]] = {}
    if captured:
        rows = await connection.fetch(
            """SELECT d.payment_id, d.request, h.created_at FROM risk_decisions d JOIN holds h USING (payment_id)
               WHERE d.payment_id = ANY($1::text[])""",
            [d.payment_id for d in captured],
        )
        by_id = {row["payment_id"]: row for row in rows}
        for decision in captured:
            assert decision.payment_id is not None
            row = by_id[decision.payment_id]
            payment = msgspec.convert(row["request"], PaymentRequested)
            outputs[(decision.kind, decision.request_id)] = [
                Output(
                    FUNDS_HELD,
                    payment.payer_account,
                    FundsHeld(
                        event_id=funds_event_id(payment.payment_id),
                        hold_id=hold_id_for(payment.payment_id),
                        held_at=row["created_at"],
                        payment=payment,
                        capture_minor=decision.amount_minor,
                    ),
                )
            ]
    if voided:
        rows = await connection.fetch(
            f"SELECT {_PAYMENT_COLUMNS}, p.ended_at FROM payments p WHERE p.payment_id = ANY($1::text[])",
            [d.payment_id for d in voided],
        )
        by_payment = {row["payment_id"]: row for row in rows}
        for decision in voided:
            row = by_payment[decision.payment_id]
            outputs[(decision.kind, decision.request_id)] = [
                outcome_from_row(row, "voided", "funds", row["ended_at"], ["voided"])
            ]
    return outputs


async def expire_due_holds(pool: Any, now: datetime) -> Tick | None:
    """Expire the manual-capture holds past their deadline; emit the expired outcomes not yet published."""
    async with pool.acquire() as connection, connection.transaction():
        due = await connection.fetch(
            """SELECT payment_id, account_id FROM holds
               WHERE status = 'held' AND expires_at <= $1 ORDER BY expires_at, payment_id LIMIT $2""",
            now,
            EXPIRE_HOLDS_MAX,
        )
        if due:
            await _expire(connection, due, now)
        rows = await connection.fetch(
            f"""SELECT {_PAYMENT_COLUMNS}, h.expires_at, p.ended_at FROM holds h JOIN payments p USING (payment_id)
                WHERE h.status = 'expired' AND h.expiry_published_at IS NULL
                ORDER BY h.updated_at, h.payment_id LIMIT $1""",
            PUBLISH_EXPIRED_MAX,
        )
    if not rows:
        return None
    outputs = [
        outcome_from_row(row, "expired", "funds", row["ended_at"], [f"expired: not captured by {row['expires_at']}"])
        for row in rows
    ]
    payment_ids = [row["payment_id"] for row in rows]

    async def published() -> None:
        async with pool.acquire() as connection:
            await connection.execute(
                "UPDATE holds SET expiry_published_at = $2 WHERE payment_id = ANY($1::text[])", payment_ids, now
            )

    return Tick(outputs, published)


async def _expire(connection: Any, due: Sequence[Any], now: datetime) -> None:
    # Accounts first, then holds: the lock order of the funds stage's batches.
    await connection.execute(
        """SELECT 1 FROM accounts WHERE account_id = ANY($1::text[]) AND kind = 'customer'
           ORDER BY account_id FOR UPDATE""",
        sorted({row["account_id"] for row in due}),
    )
    # Re-checked under the locks: a capture or void that committed first has ended the hold.
    expired = await connection.fetch(
        """UPDATE holds SET status = 'expired', released_minor = amount_minor, updated_at = $2
           WHERE payment_id = ANY($1::text[]) AND status = 'held' AND expires_at <= $2
           RETURNING payment_id, account_id, amount_minor""",
        [row["payment_id"] for row in due],
        now,
    )
    if not expired:
        return
    per_account: dict[str, int] = {}
    for row in expired:
        per_account[row["account_id"]] = per_account.get(row["account_id"], 0) + row["amount_minor"]
    accounts = sorted(per_account)
    await connection.execute(
        """UPDATE accounts AS a SET held_minor = a.held_minor - v.amount
           FROM unnest($1::text[], $2::bigint[]) AS v(id, amount) WHERE a.account_id = v.id""",
        accounts,
        [per_account[a] for a in accounts],
    )
    await connection.execute(
        """UPDATE payments SET status = 'expired', ended_at = $2, updated_at = $2
           WHERE payment_id = ANY($1::text[]) AND status = 'authorized'""",
        [row["payment_id"] for row in expired],
        now,
    )
