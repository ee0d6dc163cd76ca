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
from datetime import datetime
from typing import Any

import msgspec

from paystream.stage.contract import Accepted, Output, Refused, StageResult, Tick
from schemas.payments import (
    FundsHeld,
    PaymentCleared,
    clearing_event_id,
)
from topology.topics import FUNDS_HELD, PAYMENTS_CLEARED
from workers.clearing_store import Cleared, OpenHold, fee_schedules, lock_holds, store_clearings, stored_clearings
from workers.failures import Identity, fail_payments
from workers.fees import FeeSchedule, split
from workers.outcomes import outcome_from_row

NO_FEE_SCHEDULE = "no_fee_schedule"


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
        open_holds, hold_status = await lock_holds(connection, payment_ids)
        cleared = await stored_clearings(connection, payment_ids)
        fresh = [p for p in payment_ids if p not in cleared and p in open_holds]
        schedules = await fee_schedules(connection, [open_holds[p] for p in fresh])
        claimed = {r.event.payment.payment_id: _claimed_identity(r.event) for r in records}

        capturable = [
            open_holds[p]
            for p in fresh
            if (open_holds[p].merchant_id, open_holds[p].currency) in schedules and claimed[p] == open_holds[p].identity
        ]
        new = [_clear(h, schedules[(h.merchant_id, h.currency)], now) for h in capturable]
        await store_clearings(connection, new, now)
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
    fee, net = split(hold.capture_minor, schedule)
    return Cleared(
        hold.payment_id,
        hold.payer_account,
        hold.merchant_id,
        hold.currency,
        hold.capture_minor,
        fee,
        net,
        f"clr:{hold.payment_id}",
        hold.created_at,
        now,
        hold.amount_minor,
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
        outcome_from_row(
            {
                "payment_id": done.payment_id,
                "payer_account": done.payer_account,
                "merchant_id": done.merchant_id,
                "amount_minor": done.amount_minor,
                "currency": done.currency,
                "created_at": done.event_time,
            },
            "cleared",
            "clearing",
            done.cleared_at,
            captured_minor=done.gross_minor,
        ),
    ]
