"""Clearing: capture each hold and post its balanced journal.

Decides: the fee from the merchant's schedule for the currency
(`workers.fees`: basis points + fixed, at least the minimum, half-up rounding).
Everything is derived from what earlier stages stored, never from the incoming
event: the payer, amount and currency of the open hold, the merchant and event
time of the payment row. An event that disagrees with them is refused to the
dead letters (`idempotency_conflict`).
Writes: the hold becomes `captured`; the payer's balance and held both drop by
the amount; one journal (payer -gross, merchant pending +net, platform fees
+fee); one `clearings` row; the payment becomes `cleared`.
Emits: `payment.cleared` to payments.cleared (key merchant) and a `cleared` outcome.
Refusals: a funds.held whose hold is not open (never placed, released) is
refused to the dead letters (`hold_not_open`): clearing never debits without
a hold. A payment whose merchant has no fee schedule for its currency cannot
be captured: its hold is released and it ends `failed` (outcome `failed`).
The stored results are read only after the payment's hold rows are locked, so
a retry that runs while a first, unacknowledged commit lands returns that
commit's events instead of refusing the record.
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
from schemas.money import CurrencyCode
from schemas.payments import (
    FundsHeld,
    PaymentCleared,
    PaymentOutcome,
    clearing_event_id,
    outcome_event_id,
)
from topology.topics import FUNDS_HELD, PAYMENTS_CLEARED, PAYMENTS_OUTCOMES
from workers.failures import Identity, fail_payments
from workers.fees import FeeSchedule, split

NO_FEE_SCHEDULE = "no_fee_schedule"


@dataclass(frozen=True, slots=True)
class Cleared:
    payment_id: str
    payer_account: str
    merchant_id: str
    currency: CurrencyCode
    gross_minor: int
    fee_minor: int
    net_minor: int
    journal_id: str
    event_time: datetime
    cleared_at: datetime

    @property
    def identity(self) -> Identity:
        return (self.payer_account, self.merchant_id, self.gross_minor, self.currency)


@dataclass(frozen=True, slots=True)
class OpenHold:
    """An open hold joined with its payment row: the stored truth a capture is made from."""

    payment_id: str
    payer_account: str
    merchant_id: str
    amount_minor: int
    currency: CurrencyCode
    created_at: datetime

    @property
    def identity(self) -> Identity:
        return (self.payer_account, self.merchant_id, self.amount_minor, self.currency)


def _claimed_identity(event: FundsHeld) -> Identity:
    payment = event.payment
    return (payment.payer_account, payment.merchant_id, payment.amount_minor, payment.currency)


class ClearingStage:
    name = "clearing"
    input_topic = FUNDS_HELD
    input_type = FundsHeld

    async def apply(self, connection: Any, records: Sequence[Accepted[FundsHeld]], now: datetime) -> StageResult:
        payment_ids = sorted({r.event.payment.payment_id for r in records})
        # Lock first, then read what is stored: see the module docstring.
        open_holds, hold_status = await _lock_holds(connection, payment_ids)
        cleared = await _stored_clearings(connection, payment_ids)
        fresh = [p for p in payment_ids if p not in cleared and p in open_holds]
        schedules = await _fee_schedules(connection, [open_holds[p] for p in fresh])
        claimed = {r.event.payment.payment_id: _claimed_identity(r.event) for r in records}

        capturable = [
            open_holds[p]
            for p in fresh
            if (open_holds[p].merchant_id, open_holds[p].currency) in schedules and claimed[p] == open_holds[p].identity
        ]
        new = [_clear(h, schedules[(h.merchant_id, h.currency)], now) for h in capturable]
        await _store(connection, new, now)
        cleared.update({c.payment_id: c for c in new})

        unschedulable = {
            p: f"{NO_FEE_SCHEDULE}: merchant {open_holds[p].merchant_id} has no fee schedule for"
            f" {open_holds[p].currency}"
            for p in fresh
            if (open_holds[p].merchant_id, open_holds[p].currency) not in schedules
            and claimed[p] == open_holds[p].identity
        }
        # A released hold's payment already failed: its stored outcome is sent again.
        unschedulable.update({p: "" for p in payment_ids if hold_status.get(p) == "released"})
        failed = await fail_payments(connection, unschedulable, {p: claimed[p] for p in unschedulable}, "clearing", now)
        failed_by_id = {o.key: o for o in failed}

        result = StageResult()
        for record in records:
            payment_id = record.event.payment.payment_id
            done = cleared.get(payment_id)
            if done is not None and done.identity == _claimed_identity(record.event):
                result.outputs.extend(_outputs(done))
            elif payment_id in failed_by_id:
                result.outputs.append(failed_by_id[payment_id])
            else:
                result.refused.append(_refusal(record, done, open_holds.get(payment_id)))
        return result

    async def abandon(
        self, connection: Any, records: Sequence[tuple[Accepted[FundsHeld], str]], now: datetime
    ) -> list[Output]:
        reasons = {r.event.payment.payment_id: reason for r, reason in records}
        claimed = {r.event.payment.payment_id: _claimed_identity(r.event) for r, _ in records}
        return await fail_payments(connection, reasons, claimed, "clearing", now)

    async def tick(self, pool: Any, now: datetime) -> Tick | None:
        return None


def _refusal(record: Accepted[FundsHeld], done: Cleared | None, hold: OpenHold | None) -> Refused:
    event = record.event
    stored = done.identity if done is not None else hold.identity if hold is not None else None
    if stored is not None:
        return Refused(
            record.origin,
            "payment",
            "idempotency_conflict",
            f"payment {event.payment.payment_id} is stored as payer/merchant/amount/currency {stored};"
            f" the event says {_claimed_identity(event)}",
            record.raw or msgspec.json.encode(event),
        )
    return Refused(
        record.origin,
        "hold_id",
        "hold_not_open",
        f"no open hold {event.hold_id} to capture (never placed, or released)",
        record.raw or msgspec.json.encode(event),
    )


def _clear(hold: OpenHold, schedule: FeeSchedule, now: datetime) -> Cleared:
    fee, net = split(hold.amount_minor, schedule)
    return Cleared(
        hold.payment_id,
        hold.payer_account,
        hold.merchant_id,
        hold.currency,
        hold.amount_minor,
        fee,
        net,
        f"clr:{hold.payment_id}",
        hold.created_at,
        now,
    )


def _outputs(done: Cleared) -> list[Output]:
    return [
        Output(
            PAYMENTS_CLEARED,
            done.merchant_id,
            PaymentCleared(
                event_id=clearing_event_id(done.payment_id),
                payment_id=done.payment_id,
                payer_account=done.payer_account,
                merchant_id=done.merchant_id,
                currency=done.currency,
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
            PaymentOutcome(
                event_id=outcome_event_id(done.payment_id, "cleared"),
                payment_id=done.payment_id,
                status="cleared",
                stage="clearing",
                reasons=[],
                payer_account=done.payer_account,
                merchant_id=done.merchant_id,
                amount_minor=done.gross_minor,
                currency=done.currency,
                created_at=done.event_time,
                occurred_at=done.cleared_at,
            ),
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


async def _lock_holds(connection: Any, payment_ids: list[str]) -> tuple[dict[str, OpenHold], dict[str, str]]:
    """Lock every hold row of the batch (whatever its status); return the open ones and every status."""
    rows = await connection.fetch(
        """SELECT h.payment_id, h.status, h.account_id, h.amount_minor, h.currency,
                  p.merchant_id, p.created_at
           FROM holds h JOIN payments p USING (payment_id)
           WHERE h.payment_id = ANY($1::text[])
           ORDER BY h.payment_id FOR UPDATE OF h""",
        payment_ids,
    )
    open_holds = {
        row["payment_id"]: OpenHold(
            row["payment_id"],
            row["account_id"],
            row["merchant_id"],
            row["amount_minor"],
            row["currency"].strip(),
            row["created_at"],
        )
        for row in rows
        if row["status"] == "held"
    }
    return open_holds, {row["payment_id"]: row["status"] for row in rows}


async def _fee_schedules(connection: Any, holds: list[OpenHold]) -> dict[tuple[str, str], FeeSchedule]:
    if not holds:
        return {}
    rows = await connection.fetch(
        """SELECT merchant_id, currency, fee_bps, fixed_minor, min_minor FROM merchant_fee_schedules
           WHERE merchant_id = ANY($1::text[])""",
        sorted({h.merchant_id for h in holds}),
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
