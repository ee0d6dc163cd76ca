"""Funds: place a hold on the payer's account for each approved payment.

Decides: hold when the account exists, is open, has the payment's currency
and `available = balance - held` covers the amount; otherwise decline with
the reason (unknown_account, account_closed, currency_mismatch,
insufficient_funds). Payments of one payer are taken in input order, so
available never goes negative (the database checks it too).
Writes: one `holds` row per payment (held or declined), the payer's `held_minor`,
and the payment's status.
Emits: `funds.held` (key payer) for a hold; a `declined` outcome otherwise.
Everything is derived from the request risk stored and approved, never from
the incoming event: an event for a payment risk did not approve, or that
disagrees with the stored request, is refused to the dead letters
(`not_approved`, `idempotency_conflict`). The payers' rows are locked before
the stored holds are read, so a retry that runs while a first, unacknowledged
commit lands returns that commit's events. A record isolated as poison ends
its payment `failed` (`abandon`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from paystream.db.arrays import join_reasons
from paystream.stage.contract import Accepted, Output, Refused, StageResult, Tick
from schemas.payments import (
    FundsHeld,
    PaymentRequested,
    RiskAssessed,
    funds_event_id,
    outcome_of,
)
from topology.topics import FUNDS_HELD, PAYMENTS_APPROVED, PAYMENTS_OUTCOMES
from workers.failures import Identity, fail_payments


@dataclass(slots=True)
class AccountState:
    account_id: str
    currency: str
    status: str
    balance_minor: int
    held_minor: int

    @property
    def available_minor(self) -> int:
        return self.balance_minor - self.held_minor


@dataclass(frozen=True, slots=True)
class HoldDecision:
    payment_id: str
    held: bool
    reasons: tuple[str, ...]
    decided_at: datetime


def hold_id_for(payment_id: str) -> str:
    return f"hold:{payment_id}"


def decide_holds(
    payments: Sequence[PaymentRequested], accounts: dict[str, AccountState], now: datetime
) -> list[HoldDecision]:
    """Pure: decide each hold in order, updating `accounts[...].held_minor` as holds are placed."""
    decisions = []
    for payment in payments:
        account = accounts.get(payment.payer_account)
        reason = None
        if account is None:
            reason = f"unknown_account: {payment.payer_account} does not exist"
        elif account.status != "open":
            reason = f"account_closed: {payment.payer_account} is {account.status}"
        elif account.currency != payment.currency:
            reason = f"currency_mismatch: account holds {account.currency}, payment is {payment.currency}"
        elif account.available_minor < payment.amount_minor:
            reason = f"insufficient_funds: available {account.available_minor} < amount {payment.amount_minor}"
        if reason is None:
            assert account is not None
            account.held_minor += payment.amount_minor
            assert account.available_minor >= 0
        decisions.append(HoldDecision(payment.payment_id, reason is None, (reason,) if reason else (), now))
    return decisions


class FundsStage:
    name = "funds"
    input_topic = PAYMENTS_APPROVED
    input_type = RiskAssessed

    async def apply(self, connection: Any, records: Sequence[Accepted[RiskAssessed]], now: datetime) -> StageResult:
        payment_ids = sorted({r.event.payment.payment_id for r in records})
        approved = await _approved_requests(connection, payment_ids)
        # Lock the payers' rows first, then read what is stored: see the module docstring.
        accounts = await _lock_accounts(connection, sorted({p.payer_account for p in approved.values()}))
        decided = await _stored_decisions(connection, payment_ids)
        fresh = [
            approved[r.event.payment.payment_id]
            for r in records
            if r.event.payment.payment_id in approved
            and r.event.payment.payment_id not in decided
            and _identity(approved[r.event.payment.payment_id]) == _identity(r.event.payment)
        ]
        fresh = list({p.payment_id: p for p in fresh}.values())  # first occurrence, input order

        if fresh:
            held_before = {a.account_id: a.held_minor for a in accounts.values()}
            decisions = decide_holds(fresh, accounts, now)
            await _store(connection, fresh, decisions, accounts, held_before, now)
            decided.update({d.payment_id: d for d in decisions})

        result = StageResult()
        for record in records:
            payment_id = record.event.payment.payment_id
            stored = approved.get(payment_id)
            if stored is None:
                result.refused.append(_refusal(record, "not_approved", f"risk never approved payment {payment_id}"))
            elif _identity(stored) != _identity(record.event.payment):
                result.refused.append(
                    _refusal(
                        record,
                        "idempotency_conflict",
                        f"payment {payment_id} was approved as payer/merchant/amount/currency {_identity(stored)};"
                        f" the event says {_identity(record.event.payment)}",
                    )
                )
            else:
                result.outputs.append(_output(stored, decided[payment_id]))
        return result

    async def abandon(
        self, connection: Any, records: Sequence[tuple[Accepted[RiskAssessed], str]], now: datetime
    ) -> list[Output]:
        reasons = {r.event.payment.payment_id: reason for r, reason in records}
        claimed = {r.event.payment.payment_id: _identity(r.event.payment) for r, _ in records}
        return await fail_payments(connection, reasons, claimed, "funds", now)

    async def tick(self, pool: Any, now: datetime) -> Tick | None:
        return None


def _identity(payment: PaymentRequested) -> Identity:
    return (payment.payer_account, payment.merchant_id, payment.amount_minor, payment.currency)


def _refusal(record: Accepted[RiskAssessed], rule: str, detail: str) -> Refused:
    return Refused(record.origin, "payment.payment_id", rule, detail, record.raw or msgspec.json.encode(record.event))


def _output(payment: PaymentRequested, decision: HoldDecision) -> Output:
    if decision.held:
        return Output(
            FUNDS_HELD,
            payment.payer_account,
            FundsHeld(
                event_id=funds_event_id(payment.payment_id),
                hold_id=hold_id_for(payment.payment_id),
                held_at=decision.decided_at,
                payment=payment,
            ),
        )
    return Output(
        PAYMENTS_OUTCOMES,
        payment.payment_id,
        outcome_of(payment, "declined", "funds", decision.decided_at, list(decision.reasons)),
    )


async def _approved_requests(connection: Any, payment_ids: list[str]) -> dict[str, PaymentRequested]:
    """The requests risk stored and approved: the only source of what a hold is for."""
    rows = await connection.fetch(
        """SELECT payment_id, request FROM risk_decisions
           WHERE payment_id = ANY($1::text[]) AND decision = 'approved'""",
        payment_ids,
    )
    return {row["payment_id"]: msgspec.convert(row["request"], PaymentRequested) for row in rows}


async def _stored_decisions(connection: Any, payment_ids: list[str]) -> dict[str, HoldDecision]:
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


async def _lock_accounts(connection: Any, account_ids: list[str]) -> dict[str, AccountState]:
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


async def _store(
    connection: Any,
    payments: list[PaymentRequested],
    decisions: list[HoldDecision],
    accounts: dict[str, AccountState],
    held_before: dict[str, int],
    now: datetime,
) -> None:
    await connection.execute(
        """
        INSERT INTO holds (payment_id, hold_id, account_id, amount_minor, currency, status, reasons,
                           created_at, updated_at)
        SELECT v.id, v.hold, v.account, v.amount, v.currency, v.status,
               string_to_array(v.reasons, chr(31)), $8, $8
        FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[])
             AS v(id, hold, account, amount, currency, status, reasons)
        """,
        [p.payment_id for p in payments],
        [hold_id_for(p.payment_id) for p in payments],
        [p.payer_account for p in payments],
        [p.amount_minor for p in payments],
        [p.currency for p in payments],
        ["held" if d.held else "declined" for d in decisions],
        [join_reasons(d.reasons) for d in decisions],
        now,
    )
    changed = [a for a in accounts.values() if a.held_minor != held_before[a.account_id]]
    if changed:
        await connection.execute(
            """UPDATE accounts AS a SET held_minor = v.held
               FROM unnest($1::text[], $2::bigint[]) AS v(id, held) WHERE a.account_id = v.id""",
            [a.account_id for a in changed],
            [a.held_minor for a in changed],
        )
    await connection.execute(
        """
        UPDATE payments AS p SET
            status = CASE WHEN v.held THEN 'held' ELSE 'declined' END,
            hold_id = CASE WHEN v.held THEN v.hold END,
            held_at = CASE WHEN v.held THEN $5::timestamptz END,
            decline_reasons = string_to_array(v.reasons, chr(31)),
            declined_at = CASE WHEN v.held THEN NULL ELSE $5::timestamptz END,
            updated_at = $5
        FROM unnest($1::text[], $2::bool[], $3::text[], $4::text[]) AS v(id, held, hold, reasons)
        WHERE p.payment_id = v.id AND p.status = 'approved'
        """,
        [d.payment_id for d in decisions],
        [d.held for d in decisions],
        [hold_id_for(d.payment_id) for d in decisions],
        [join_reasons(d.reasons) for d in decisions],
        now,
    )
