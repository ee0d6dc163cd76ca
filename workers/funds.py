"""Funds: place a hold on the payer's account for each approved payment; apply account requests.

Decides: hold when the account exists, is open, has the payment's currency
and `available = balance - held` covers the amount; otherwise decline with
the reason (unknown_account, account_closed, currency_mismatch,
insufficient_funds). Payments of one payer are taken in input order, so
available never goes negative (the database checks it too).
Writes: one `holds` row per payment (held or declined), the payer's `held_minor`,
and the payment's status.
Emits: `funds.held` (key payer) for a hold; a `declined` outcome otherwise.
Account requests risk approved (open, close, deposit, withdrawal) are decided
in the same pass, in input order with the account's payments
(`workers.account_rules`): each writes one `account_operations` row, the
account's balance or status, and for a deposit or withdrawal one balanced
journal; each emits an `account.outcome` (succeeded or declined) to
accounts.outcomes (`workers.funds_accounts`).
Manual capture (`workers.capture_rules`, `workers.funds_capture`): a manual
payment's hold is placed `authorized` with its deadline and emits an
`authorized` outcome instead of `funds.held`; a capture request marks it
`capturing` and emits `funds.held` with the amount for clearing; a void
releases it (`voided` outcome); also when the request comes in the same
batch as its payment. Timer work (`tick`): holds past their
deadline are expired and released, their `expired` outcomes sent through an
outbox mark.
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
from datetime import datetime
from typing import Any

import msgspec

from paystream.settings import Settings
from paystream.stage.contract import Accepted, Output, Refused, StageResult, Tick
from schemas.accounts import AccountRequest, AccountRequestApproved, CaptureRequested, VoidRequested
from schemas.payments import (
    FundsHeld,
    PaymentRequested,
    RiskAssessed,
    funds_event_id,
    outcome_of,
)
from schemas.refunds import RefundRequested
from topology.topics import FUNDS_HELD, PAYMENTS_APPROVED, PAYMENTS_OUTCOMES
from workers.account_rules import AccountDecision, decide_account_request
from workers.capture_rules import HoldState, hold_deadline
from workers.failures import Identity, fail_payments
from workers.funds_accounts import (
    RequestKey,
    account_outcome,
    approved_account_requests,
    other_accounts,
    store_operations,
    stored_operations,
    write_accounts,
)
from workers.funds_capture import expire_due_holds, hold_id_for, hold_outputs, lock_payment_holds, store_hold_changes
from workers.funds_refunds import lock_refunded_payments, refund_outputs, store_refunds
from workers.funds_store import (
    HoldDecision,
    approved_requests,
    decide_holds,
    lock_accounts,
    store_holds,
    stored_holds,
)

FundsInput = RiskAssessed | AccountRequestApproved


class FundsStage:
    name = "funds"
    input_topic = PAYMENTS_APPROVED
    input_type = RiskAssessed
    # payments.approved carries the approved payments and account requests of each payer, in order.
    input_types = (RiskAssessed, AccountRequestApproved)

    def __init__(self, settings: Settings | None = None) -> None:
        settings = settings or Settings()
        self.hold_expiry_s_max = settings.hold_expiry_s_max
        # The stage loop runs `tick` (hold expiry) this often.
        self.tick_interval_ms = settings.hold_expiry_interval_ms

    async def apply(self, connection: Any, records: Sequence[Accepted[FundsInput]], now: datetime) -> StageResult:
        payment_ids = sorted({r.event.payment.payment_id for r in records if isinstance(r.event, RiskAssessed)})
        request_keys = sorted({_key(r.event) for r in records if isinstance(r.event, AccountRequestApproved)})
        approved = await approved_requests(connection, payment_ids)
        requests = await approved_account_requests(connection, request_keys)
        account_ids = sorted({p.payer_account for p in approved.values()} | {r.account_id for r in requests.values()})
        # Lock the accounts' rows first, then read what is stored: see the module docstring.
        accounts = await lock_accounts(connection, account_ids)
        missing = [a for a in account_ids if a not in accounts]
        if missing:
            accounts.update(await other_accounts(connection, missing))
        before = {a.account_id: (a.balance_minor, a.held_minor, a.status) for a in accounts.values()}
        # Then the holds captures and voids act on (after the accounts: the one lock order).
        holds = await lock_payment_holds(
            connection, [r.payment_id for r in requests.values() if isinstance(r, CaptureRequested | VoidRequested)]
        )
        # And the payments refunds act on, for their running totals.
        refunded = await lock_refunded_payments(
            connection, [r.payment_id for r in requests.values() if isinstance(r, RefundRequested)]
        )
        decided = await stored_holds(connection, payment_ids)
        done = await stored_operations(connection, request_keys)

        # One pass in input order: an account's requests and payments are decided in the order sent.
        fresh: list[PaymentRequested] = []
        fresh_holds: list[HoldDecision] = []
        fresh_operations: list[AccountDecision] = []
        for record in records:
            event = record.event
            if isinstance(event, RiskAssessed):
                stored = approved.get(event.payment.payment_id)
                if (
                    stored is not None
                    and stored.payment_id not in decided
                    and _identity(stored) == _identity(event.payment)
                ):
                    decision = decide_holds([stored], accounts, now)[0]
                    decided[stored.payment_id] = decision
                    fresh.append(stored)
                    fresh_holds.append(decision)
                    if stored.capture == "manual":
                        # A capture or void later in this batch acts on the hold just decided.
                        holds[stored.payment_id] = _fresh_hold(stored, decision, self.hold_expiry_s_max)
            else:
                request = requests.get(_key(event))
                if request is not None and _key(event) not in done and request.account_id == event.account_id:
                    operation = decide_account_request(request, accounts, now, holds, refunded)
                    done[_key(event)] = operation
                    fresh_operations.append(operation)

        if fresh_operations:
            await store_operations(connection, fresh_operations, accounts, now)
            await store_refunds(connection, fresh_operations, refunded, now)
        await write_accounts(connection, accounts, before)
        if fresh:
            await store_holds(connection, fresh, fresh_holds, now, self.hold_expiry_s_max)
        # After store_holds: a capture or void may act on a hold this batch placed.
        await store_hold_changes(connection, holds, now)
        # What captures, voids and refunds emit besides their account outcome, built from stored rows.
        answered = [done[_key(r.event)] for r in records if _answered(r, requests, done)]  # type: ignore[arg-type]
        extra = await hold_outputs(connection, answered)
        extra.update(await refund_outputs(connection, answered))

        result = StageResult()
        for record in records:
            event = record.event
            if isinstance(event, AccountRequestApproved):
                answer = _request_answer(record, requests.get(_key(event)), done)  # type: ignore[arg-type]
                if not isinstance(answer, Refused):
                    result.outputs.extend(extra.get(_key(event), []))
            else:
                answer = _payment_answer(record, approved.get(event.payment.payment_id), decided)  # type: ignore[arg-type]
            if isinstance(answer, Refused):
                result.refused.append(answer)
            else:
                result.outputs.append(answer)
        return result

    async def abandon(
        self, connection: Any, records: Sequence[tuple[Accepted[FundsInput], str]], now: datetime
    ) -> list[Output]:
        # An account request isolated as poison changed nothing: its dead letter is the answer.
        payments = [(r, reason) for r, reason in records if isinstance(r.event, RiskAssessed)]
        reasons = {r.event.payment.payment_id: reason for r, reason in payments}  # type: ignore[union-attr]
        claimed = {r.event.payment.payment_id: _identity(r.event.payment) for r, _ in payments}  # type: ignore[union-attr]
        return await fail_payments(connection, reasons, claimed, "funds", now)

    async def tick(self, pool: Any, now: datetime) -> Tick | None:
        """Expire the manual-capture holds past their deadline (`workers.funds_capture`)."""
        return await expire_due_holds(pool, now)


def _answered(record: Accepted[FundsInput], requests: dict[RequestKey, AccountRequest],
              done: dict[RequestKey, AccountDecision]) -> bool:  # fmt: skip
    event = record.event
    return isinstance(event, AccountRequestApproved) and _key(event) in done and _key(event) in requests


def _fresh_hold(payment: PaymentRequested, decision: HoldDecision, hold_expiry_s_max: int) -> HoldState:
    """A manual-capture payment's hold as `lock_payment_holds` will read it once `store_holds` wrote it."""
    return HoldState(
        payment.payment_id,
        payment.payer_account,
        payment.amount_minor,
        payment.currency,
        "held" if decision.held else "declined",
        "manual",
        hold_deadline(payment, hold_expiry_s_max) if decision.held else None,
    )


def _identity(payment: PaymentRequested) -> Identity:
    return (payment.payer_account, payment.merchant_id, payment.amount_minor, payment.currency)


def _key(event: AccountRequestApproved) -> RequestKey:
    return (event.kind, event.request_id)


def _refusal(record: Accepted[Any], field: str, rule: str, detail: str) -> Refused:
    return Refused(record.origin, field, rule, detail, record.raw or msgspec.json.encode(record.event))


def _payment_answer(
    record: Accepted[RiskAssessed], stored: PaymentRequested | None, decided: dict[str, HoldDecision]
) -> Output | Refused:
    payment_id = record.event.payment.payment_id
    if stored is None:
        return _refusal(record, "payment.payment_id", "not_approved", f"risk never approved payment {payment_id}")
    if _identity(stored) != _identity(record.event.payment):
        return _refusal(
            record,
            "payment.payment_id",
            "idempotency_conflict",
            f"payment {payment_id} was approved as payer/merchant/amount/currency {_identity(stored)};"
            f" the event says {_identity(record.event.payment)}",
        )
    return _output(stored, decided[payment_id])


def _request_answer(
    record: Accepted[AccountRequestApproved], stored: AccountRequest | None, done: dict[RequestKey, AccountDecision]
) -> Output | Refused:
    event = record.event
    if stored is None:
        return _refusal(record, "request_id", "not_approved", f"risk never approved {event.kind} {event.request_id}")
    if stored.account_id != event.account_id:
        return _refusal(
            record,
            "account_id",
            "idempotency_conflict",
            f"{event.kind} {event.request_id} was approved for account {stored.account_id}; the event says"
            f" {event.account_id}",
        )
    return account_outcome(stored, done[_key(event)])


def _output(payment: PaymentRequested, decision: HoldDecision) -> Output:
    if decision.held and payment.capture == "manual":
        # The hold waits for a capture or a void (or its deadline): nothing for clearing yet.
        return Output(
            PAYMENTS_OUTCOMES, payment.payment_id, outcome_of(payment, "authorized", "funds", decision.decided_at)
        )
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
