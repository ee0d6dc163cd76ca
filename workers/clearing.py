"""Clearing: capture each hold and post its balanced journal.

Decides: the fee from the merchant's schedule for the currency
(`workers.fees`: basis points + fixed, at least the minimum, half-up rounding).
Writes: the hold becomes `captured`; the payer's balance and held both drop by
the amount; one journal (payer -gross, merchant pending +net, platform fees
+fee); one `clearings` row; the payment becomes `cleared`.
Emits: `payment.cleared` to payments.cleared (key merchant) and a `cleared` outcome.
A funds.held whose hold is not open (never placed, or released) is refused to
the dead letters: clearing never debits without a hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from paystream.ledger import (
    clearing_journal,
    fee_revenue_account,
    merchant_pending_account,
    post_journals,
)
from paystream.stage.contract import Accepted, Output, Refused, StageResult, Tick
from schemas.payments import (
    FundsHeld,
    PaymentCleared,
    clearing_event_id,
    outcome_of,
)
from topology.topics import FUNDS_HELD, PAYMENTS_CLEARED, PAYMENTS_OUTCOMES
from workers.fees import FeeSchedule, split


@dataclass(frozen=True, slots=True)
class Cleared:
    payment_id: str
    payer_account: str
    merchant_id: str
    currency: str
    gross_minor: int
    fee_minor: int
    net_minor: int
    journal_id: str
    event_time: datetime
    cleared_at: datetime


class ClearingStage:
    name = "clearing"
    input_topic = FUNDS_HELD
    input_type = FundsHeld

    async def apply(self, connection: Any, records: Sequence[Accepted[FundsHeld]], now: datetime) -> StageResult:
        payment_ids = [r.event.payment.payment_id for r in records]
        cleared = await _stored_clearings(connection, payment_ids)
        fresh: dict[str, FundsHeld] = {}
        for record in records:
            payment_id = record.event.payment.payment_id
            if payment_id not in cleared and payment_id not in fresh:
                fresh[payment_id] = record.event

        if fresh:
            open_holds = await _lock_open_holds(connection, list(fresh))
            schedules = await _fee_schedules(connection, list(fresh.values()))
            capturable = [
                e
                for e in fresh.values()
                if e.payment.payment_id in open_holds and (e.payment.merchant_id, e.payment.currency) in schedules
            ]
            new = [_clear(e, schedules[(e.payment.merchant_id, e.payment.currency)], now) for e in capturable]
            await _store(connection, new, now)
            cleared.update({c.payment_id: c for c in new})

        result = StageResult()
        for record in records:
            payment = record.event.payment
            done = cleared.get(payment.payment_id)
            if done is None:
                result.refused.append(
                    Refused(
                        record.origin,
                        "hold_id",
                        "hold_not_open",
                        f"no open hold {record.event.hold_id} (or no fee schedule for"
                        f" {payment.merchant_id}/{payment.currency}) to capture",
                        msgspec.json.encode(record.event),
                    )
                )
                continue
            result.outputs.extend(_outputs(done, record.event))
        return result

    async def tick(self, pool: Any, now: datetime) -> Tick | None:
        return None


def _clear(event: FundsHeld, schedule: FeeSchedule, now: datetime) -> Cleared:
    payment = event.payment
    fee, net = split(payment.amount_minor, schedule)
    return Cleared(
        payment.payment_id,
        payment.payer_account,
        payment.merchant_id,
        payment.currency,
        payment.amount_minor,
        fee,
        net,
        f"clr:{payment.payment_id}",
        payment.created_at,
        now,
    )


def _outputs(done: Cleared, event: FundsHeld) -> list[Output]:
    payment = event.payment
    return [
        Output(
            PAYMENTS_CLEARED,
            done.merchant_id,
            PaymentCleared(
                event_id=clearing_event_id(done.payment_id),
                payment_id=done.payment_id,
                payer_account=done.payer_account,
                merchant_id=done.merchant_id,
                currency=payment.currency,
                gross_minor=done.gross_minor,
                fee_minor=done.fee_minor,
                net_minor=done.net_minor,
                journal_id=done.journal_id,
                event_time=done.event_time,
                cleared_at=done.cleared_at,
            ),
        ),
        Output(
            PAYMENTS_OUTCOMES,
            done.payment_id,
            outcome_of(payment, "cleared", "clearing", done.cleared_at),
        ),
    ]


async def _stored_clearings(connection: Any, payment_ids: list[str]) -> dict[str, Cleared]:
    rows = await connection.fetch(
        """SELECT payment_id, payer_account, merchant_id, currency, gross_minor, fee_minor, net_minor,
                  journal_id, event_time, cleared_at
           FROM clearings WHERE payment_id = ANY($1::text[])""",
        payment_ids,
    )
    return {
        row["payment_id"]: Cleared(
            row["payment_id"],
            row["payer_account"],
            row["merchant_id"],
            row["currency"].strip(),
            row["gross_minor"],
            row["fee_minor"],
            row["net_minor"],
            row["journal_id"],
            row["event_time"],
            row["cleared_at"],
        )
        for row in rows
    }


async def _lock_open_holds(connection: Any, payment_ids: list[str]) -> set[str]:
    rows = await connection.fetch(
        """SELECT payment_id FROM holds WHERE payment_id = ANY($1::text[]) AND status = 'held'
           ORDER BY payment_id FOR UPDATE""",
        payment_ids,
    )
    return {row["payment_id"] for row in rows}


async def _fee_schedules(connection: Any, events: list[FundsHeld]) -> dict[tuple[str, str], FeeSchedule]:
    rows = await connection.fetch(
        """SELECT merchant_id, currency, fee_bps, fixed_minor, min_minor FROM merchant_fee_schedules
           WHERE merchant_id = ANY($1::text[])""",
        sorted({e.payment.merchant_id for e in events}),
    )
    return {
        (row["merchant_id"], row["currency"].strip()): FeeSchedule(row["fee_bps"], row["fixed_minor"], row["min_minor"])
        for row in rows
    }


async def _store(connection: Any, new: list[Cleared], now: datetime) -> None:
    if not new:
        return
    # Hot accounts exist before their first entry; creating them here costs
    # nothing when they already do (no row is updated).
    hot = sorted(
        {
            (
                merchant_pending_account(c.merchant_id, c.currency),
                "merchant_pending",
                c.merchant_id,
                c.currency,
            )
            for c in new
        }
        | {(fee_revenue_account(c.currency), "fee_revenue", "platform", c.currency) for c in new}
    )
    await connection.execute(
        """INSERT INTO accounts (account_id, kind, owner_id, currency)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
           ON CONFLICT (account_id) DO NOTHING""",
        [h[0] for h in hot],
        [h[1] for h in hot],
        [h[2] for h in hot],
        [h[3] for h in hot],
    )
    await connection.execute(
        """UPDATE holds SET status = 'captured', updated_at = $2
           WHERE payment_id = ANY($1::text[]) AND status = 'held'""",
        [c.payment_id for c in new],
        now,
    )
    per_payer: dict[str, int] = {}
    for c in new:
        per_payer[c.payer_account] = per_payer.get(c.payer_account, 0) + c.gross_minor
    payers = sorted(per_payer)
    await connection.execute(
        """UPDATE accounts AS a SET balance_minor = a.balance_minor - v.amount,
                                    held_minor = a.held_minor - v.amount
           FROM unnest($1::text[], $2::bigint[]) AS v(id, amount) WHERE a.account_id = v.id""",
        payers,
        [per_payer[p] for p in payers],
    )
    await post_journals(
        connection,
        [
            clearing_journal(c.payment_id, c.payer_account, c.merchant_id, c.currency, c.fee_minor, c.net_minor)
            for c in new
        ],
        now,
    )
    await connection.execute(
        """
        INSERT INTO clearings (payment_id, journal_id, payer_account, merchant_id, currency, gross_minor,
                               fee_minor, net_minor, event_time, cleared_at)
        SELECT *, $10::timestamptz FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::bigint[], $7::bigint[], $8::bigint[], $9::timestamptz[])
        """,
        [c.payment_id for c in new],
        [c.journal_id for c in new],
        [c.payer_account for c in new],
        [c.merchant_id for c in new],
        [c.currency for c in new],
        [c.gross_minor for c in new],
        [c.fee_minor for c in new],
        [c.net_minor for c in new],
        [c.event_time for c in new],
        now,
    )
    await connection.execute(
        """
        UPDATE payments AS p SET status = 'cleared', gross_minor = v.gross, fee_minor = v.fee,
               net_minor = v.net, journal_id = v.journal, cleared_at = $6, updated_at = $6
        FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[])
             AS v(id, gross, fee, net, journal)
        WHERE p.payment_id = v.id AND p.status = 'held'
        """,
        [c.payment_id for c in new],
        [c.gross_minor for c in new],
        [c.fee_minor for c in new],
        [c.net_minor for c in new],
        [c.journal_id for c in new],
        now,
    )
