"""Risk: approve or reject each requested payment.

Decides: the rules in `workers.risk_rules` (limits per currency, payer
velocity over 10 minutes and 24 hours of event time, merchant daily limit,
blocklists, merchant accepting the currency). The merchant daily limit
counts every approval of that UTC day (by event time) stored so far.
Writes: one `risk_decisions` row and one `payments` row per payment, and
adds approved amounts to `risk_merchant_day_totals`.
Emits: `risk.assessed` to payments.approved (key payer) when approved; a
`rejected` outcome to payments.outcomes otherwise.
A payment id seen before is answered with the stored decision; the same id
with a different payer, merchant, amount or currency is refused to the dead
letters (`idempotency_conflict`). The outputs always come from what is stored
after this transaction's insert: two risk consumers deciding one payment id
at once (sent for two payers, so on two partitions) both end with the one
stored decision, and the loser refuses its record instead of emitting its own.
The merchant daily limit holds under concurrent risk consumers: the running
total is re-read as it is added to (row lock), and a batch decided on a stale
total is retried (`ConcurrentChangeError`) instead of overshooting.
Admits at the edge: a created_at inside the event-time window around the
record's broker append time (`schemas.event_time`).
Account requests on the same topic (open, close, deposit, withdrawal) are
answered by `workers.risk_accounts`; every answer is emitted in input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from paystream.db.arrays import join_reasons
from paystream.db.plans import fetch_custom_plan
from paystream.errors import ConcurrentChangeError
from paystream.settings import Settings
from paystream.stage.contract import Accepted, Output, Refused, StageResult, Tick
from schemas.accounts import REQUEST_TYPES, AccountRequest
from schemas.codec import Invalid
from schemas.event_time import EventTimeWindow
from schemas.payments import (
    PaymentRequested,
    RiskAssessed,
    outcome_of,
    risk_event_id,
)
from topology.topics import PAYMENTS_APPROVED, PAYMENTS_OUTCOMES, PAYMENTS_REQUESTED
from workers.risk_accounts import answer_account_requests
from workers.risk_rules import VELOCITY_LONG_WINDOW, RiskContext, RiskLimits, assess_batch, utc_day

RiskInput = PaymentRequested | AccountRequest


@dataclass(frozen=True, slots=True)
class Decided:
    payment: PaymentRequested
    approved: bool
    reasons: list[str]
    assessed_at: datetime


class RiskStage:
    name = "risk"
    input_topic = PAYMENTS_REQUESTED
    input_type = PaymentRequested
    # The payer-keyed request topic carries payments and account requests (§13).
    input_types = (PaymentRequested, *REQUEST_TYPES.values())

    def __init__(self, settings: Settings) -> None:
        self.window = EventTimeWindow.from_settings(settings)

    def admit(self, request: RiskInput, record_time: datetime) -> Invalid | None:
        """The edge rule only this stage applies: created_at near the record's append time."""
        return self.window.check(request.created_at, record_time)

    async def apply(self, connection: Any, records: Sequence[Accepted[RiskInput]], now: datetime) -> StageResult:
        payments = [r for r in records if isinstance(r.event, PaymentRequested)]
        requests = [r for r in records if not isinstance(r.event, PaymentRequested)]
        payment_answers = iter(
            await _answer_payments(connection, payments, now) if payments else []  # type: ignore[arg-type]
        )
        request_answers = iter(
            await answer_account_requests(connection, requests, now) if requests else []  # type: ignore[arg-type]
        )
        # Answers in input order: an account's requests and payments reach funds in the order sent.
        result = StageResult()
        for record in records:
            answer = next(payment_answers if isinstance(record.event, PaymentRequested) else request_answers)
            if isinstance(answer, Refused):
                result.refused.append(answer)
            else:
                result.outputs.append(answer)
        return result

    async def tick(self, pool: Any, now: datetime) -> Tick | None:
        return None

    async def abandon(
        self, connection: Any, records: Sequence[tuple[Accepted[RiskInput], str]], now: datetime
    ) -> list[Output]:
        # Nothing was placed for a request risk could not decide: the dead letter is its answer.
        return []


async def _answer_payments(
    connection: Any, records: Sequence[Accepted[PaymentRequested]], now: datetime
) -> list[Output | Refused]:
    """One answer per payment record, in order: the stored decision's event, or a conflict refusal."""
    decided = await _stored_decisions(connection, [r.event.payment_id for r in records])
    fresh: dict[str, PaymentRequested] = {}
    for record in records:
        payment_id = record.event.payment_id
        if payment_id not in decided and payment_id not in fresh:
            fresh[payment_id] = record.event

    if fresh:
        payments = list(fresh.values())
        context = await _load_context(connection, payments)
        decisions = assess_batch(payments, context)
        await _store(connection, payments, [d.reasons for d in decisions], now, context)
        # Read back what is stored: a concurrent transaction may have stored
        # some of these ids first (our insert then did nothing).
        decided.update(await _stored_decisions(connection, list(fresh)))

    answers: list[Output | Refused] = []
    for record in records:
        original = decided[record.event.payment_id]
        if _identity(original.payment) != _identity(record.event):
            answers.append(_conflict(record, original.payment))
        else:
            answers.append(_output(original))
    return answers


def _identity(payment: PaymentRequested) -> tuple[str, str, int, str]:
    return (payment.payer_account, payment.merchant_id, payment.amount_minor, payment.currency)


def _conflict(record: Accepted[PaymentRequested], original: PaymentRequested) -> Refused:
    return Refused(
        record.origin,
        "payment_id",
        "idempotency_conflict",
        f"payment {original.payment_id} was already requested with different"
        f" payer/merchant/amount/currency {_identity(original)}; got {_identity(record.event)}",
        record.raw or msgspec.json.encode(record.event),
    )


def _output(decided: Decided) -> Output:
    payment = decided.payment
    if decided.approved:
        return Output(
            PAYMENTS_APPROVED,
            payment.payer_account,
            RiskAssessed(
                event_id=risk_event_id(payment.payment_id),
                decision="approved",
                reasons=[],
                assessed_at=decided.assessed_at,
                payment=payment,
            ),
        )
    return Output(
        PAYMENTS_OUTCOMES,
        payment.payment_id,
        outcome_of(payment, "rejected", "risk", decided.assessed_at, decided.reasons),
    )


async def _stored_decisions(connection: Any, payment_ids: list[str]) -> dict[str, Decided]:
    rows = await connection.fetch(
        """SELECT payment_id, decision, reasons, assessed_at, request
           FROM risk_decisions WHERE payment_id = ANY($1::text[])""",
        payment_ids,
    )
    return {
        row["payment_id"]: Decided(
            msgspec.convert(row["request"], PaymentRequested),
            row["decision"] == "approved",
            list(row["reasons"]),
            row["assessed_at"],
        )
        for row in rows
    }


async def _load_context(connection: Any, payments: list[PaymentRequested]) -> RiskContext:
    payers = sorted({p.payer_account for p in payments})
    merchants = sorted({p.merchant_id for p in payments})
    currencies = sorted({p.currency for p in payments})
    countries = sorted({p.country for p in payments})
    limit_rows = await connection.fetch("SELECT * FROM risk_limits WHERE currency = ANY($1::text[])", currencies)
    blocked_rows = await connection.fetch(
        """SELECT kind, value, reason FROM risk_blocklist
           WHERE (kind = 'payer' AND value = ANY($1::text[]))
              OR (kind = 'merchant' AND value = ANY($2::text[]))
              OR (kind = 'country' AND value = ANY($3::text[]))""",
        payers,
        merchants,
        countries,
    )
    accepting_rows = await connection.fetch(
        """SELECT s.merchant_id, s.currency, m.status FROM merchant_fee_schedules s
           JOIN merchants m USING (merchant_id)
           WHERE s.merchant_id = ANY($1::text[])""",
        merchants,
    )
    earliest = min(p.created_at for p in payments)
    latest = max(p.created_at for p in payments)
    # Each payer's own window: one back-dated payment must not widen every payer's read.
    spans: dict[str, tuple[datetime, datetime]] = {}
    for p in payments:
        low, high = spans.get(p.payer_account, (p.created_at, p.created_at))
        spans[p.payer_account] = (min(low, p.created_at), max(high, p.created_at))
    history_rows = await fetch_custom_plan(
        connection,
        """SELECT d.payer_account, d.created_at, d.amount_minor
           FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS v(payer, since, until)
           JOIN risk_decisions d ON d.payer_account = v.payer AND d.decision = 'approved'
                AND d.created_at > v.since AND d.created_at <= v.until""",
        payers,
        [spans[payer][0] - VELOCITY_LONG_WINDOW for payer in payers],
        [spans[payer][1] for payer in payers],
    )
    day_rows = await connection.fetch(
        """SELECT merchant_id, currency, day, approved_minor AS amount
           FROM risk_merchant_day_totals
           WHERE merchant_id = ANY($1::text[]) AND day BETWEEN $2 AND $3""",
        merchants,
        utc_day(earliest),
        utc_day(latest),
    )
    context = RiskContext(
        limits={
            row["currency"].strip(): RiskLimits(
                row["txn_amount_max_minor"],
                row["payer_10m_count_max"],
                row["payer_10m_amount_max_minor"],
                row["payer_24h_count_max"],
                row["payer_24h_amount_max_minor"],
                row["merchant_daily_amount_max_minor"],
            )
            for row in limit_rows
        },
        blocked={(row["kind"], row["value"]): row["reason"] for row in blocked_rows},
        accepting={
            (row["merchant_id"], row["currency"].strip()) for row in accepting_rows if row["status"] == "active"
        },
        suspended={row["merchant_id"] for row in accepting_rows if row["status"] == "suspended"},
    )
    for row in history_rows:
        context.payer_history.setdefault(row["payer_account"], []).append((row["created_at"], row["amount_minor"]))
    for row in day_rows:
        context.merchant_day_amount[(row["merchant_id"], row["currency"].strip(), row["day"])] = row["amount"]
    return context


async def _store(
    connection: Any,
    payments: list[PaymentRequested],
    reasons: list[tuple[str, ...]],
    now: datetime,
    context: RiskContext,
) -> None:
    decisions = ["rejected" if r else "approved" for r in reasons]
    # The day totals grow only by the decisions this statement stored: a
    # payment another transaction stored first is not counted twice. Rows are
    # added to in key order, so two risk transactions cannot deadlock on them.
    totals = await connection.fetch(
        """
        WITH stored AS (
            INSERT INTO risk_decisions (payment_id, payer_account, merchant_id, amount_minor, currency,
                                        created_at, decision, reasons, assessed_at, request)
            SELECT v.id, v.payer, v.merchant, v.amount, v.currency, v.created, v.decision,
                   string_to_array(v.reasons, chr(31)), $9, v.request
            FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[],
                        $6::timestamptz[], $7::text[], $8::text[], $10::jsonb[])
                 AS v(id, payer, merchant, amount, currency, created, decision, reasons, request)
            ON CONFLICT (payment_id) DO NOTHING
            RETURNING merchant_id, currency, created_at, amount_minor, decision
        )
        INSERT INTO risk_merchant_day_totals AS t (merchant_id, currency, day, approved_minor)
        SELECT merchant_id, currency, (created_at AT TIME ZONE 'UTC')::date, sum(amount_minor)
        FROM stored WHERE decision = 'approved'
        GROUP BY 1, 2, 3
        ORDER BY 1, 2, 3
        ON CONFLICT (merchant_id, currency, day)
            DO UPDATE SET approved_minor = t.approved_minor + excluded.approved_minor
        RETURNING merchant_id, currency, day, approved_minor
        """,
        [p.payment_id for p in payments],
        [p.payer_account for p in payments],
        [p.merchant_id for p in payments],
        [p.amount_minor for p in payments],
        [p.currency for p in payments],
        [p.created_at for p in payments],
        decisions,
        [join_reasons(r) for r in reasons],
        now,
        [msgspec.to_builtins(p) for p in payments],
    )
    _check_day_totals(totals, context)
    await connection.execute(
        """
        INSERT INTO payments (payment_id, payer_account, merchant_id, amount_minor, currency, country,
                              method, metadata, created_at, requested_at, status, risk_reasons, risk_at,
                              updated_at)
        SELECT v.id, v.payer, v.merchant, v.amount, v.currency, v.country, v.method, v.metadata,
               v.created, $11, v.status, string_to_array(v.reasons, chr(31)), $11, $11
        FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[],
                    $7::text[], $8::jsonb[], $9::timestamptz[], $10::text[], $12::text[])
             AS v(id, payer, merchant, amount, currency, country, method, metadata, created, status,
                  reasons)
        ON CONFLICT (payment_id) DO NOTHING
        """,
        [p.payment_id for p in payments],
        [p.payer_account for p in payments],
        [p.merchant_id for p in payments],
        [p.amount_minor for p in payments],
        [p.currency for p in payments],
        [p.country for p in payments],
        [p.method for p in payments],
        [p.metadata for p in payments],
        [p.created_at for p in payments],
        decisions,
        now,
        [join_reasons(r) for r in reasons],
    )


def _check_day_totals(totals: Sequence[Any], context: RiskContext) -> None:
    """Refuse to commit approvals that push a merchant's day past its limit.

    The decisions assumed the totals read at the start of the batch. The
    upsert re-reads each row as it adds to it (waiting for a concurrent risk
    transaction on the same row to commit), so a total above the limit here
    means another consumer approved for that merchant-day meanwhile: retry the
    batch, which reads the new total and decides again.
    """
    for row in totals:
        limits = context.limits.get(row["currency"].strip())
        if limits is not None and row["approved_minor"] > limits.merchant_daily_amount_max_minor:
            raise ConcurrentChangeError(
                f"merchant {row['merchant_id']} {row['currency'].strip()} day {row['day']} reached"
                f" {row['approved_minor']} > limit {limits.merchant_daily_amount_max_minor} meanwhile"
            )
