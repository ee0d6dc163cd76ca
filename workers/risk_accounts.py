"""The risk stage's part for account requests (open, close, deposit, withdrawal).

Decides: withdrawals against the blocklist (the account as a payer) and the
currency's single-transaction limit, like payments; opens, closes and
deposits pass (what funds checks is theirs: the account's state).
Writes: one `account_requests` row per request, with its decision: the
idempotency record. A request id seen before is answered with the stored
decision; the same id with a different account, amount, currency or
reference is refused to the dead letters (`idempotency_conflict`).
Emits: `account.request.approved` to payments.approved (key account), in
order with the account's payments; a `rejected` outcome to accounts.outcomes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from paystream.db.arrays import join_reasons
from paystream.stage.contract import Accepted, Output, Refused
from schemas.accounts import (
    REQUEST_TYPES,
    AccountOutcome,
    AccountRequest,
    AccountRequestApproved,
    WithdrawalRequested,
    account_outcome_event_id,
    account_request_event_id,
    request_identity,
    request_kind,
)
from topology.topics import ACCOUNTS_OUTCOMES, PAYMENTS_APPROVED
from workers.risk_rules import REASON_CHARS_MAX

RequestKey = tuple[str, str]  # (kind, request_id)


@dataclass(frozen=True, slots=True)
class StoredRequest:
    request: AccountRequest
    approved: bool
    reasons: list[str]
    assessed_at: datetime


def key_of(request: AccountRequest) -> RequestKey:
    return (request_kind(request), request.request_id)


def assess_withdrawal(
    request: WithdrawalRequested, blocked: dict[str, str], txn_max: dict[str, int]
) -> tuple[str, ...]:
    """Every rule the withdrawal breaks, in a fixed order; empty means approved."""
    reasons = []
    if request.account_id in blocked:
        reasons.append(f"blocked_payer: {blocked[request.account_id]}")
    limit = txn_max.get(request.currency)
    if limit is None:
        reasons.append(f"currency_not_configured: no risk limits for {request.currency}")
    elif request.amount_minor > limit:
        reasons.append(f"txn_amount_limit: {request.amount_minor} > {limit}")
    return tuple(reason[:REASON_CHARS_MAX] for reason in reasons)


async def answer_account_requests(
    connection: Any, records: Sequence[Accepted[AccountRequest]], now: datetime
) -> list[Output | Refused]:
    """One answer per record, in order: the stored decision's event, or a conflict refusal."""
    keys = sorted({key_of(r.event) for r in records})
    stored = await _stored(connection, keys)
    fresh: dict[RequestKey, AccountRequest] = {}
    for record in records:
        key = key_of(record.event)
        if key not in stored and key not in fresh:
            fresh[key] = record.event
    if fresh:
        requests = list(fresh.values())
        reasons = await _assess(connection, requests)
        await _store(connection, requests, reasons, now)
        # Read back what is stored: a concurrent transaction may have stored some first.
        stored.update(await _stored(connection, list(fresh)))
    answers: list[Output | Refused] = []
    for record in records:
        original = stored[key_of(record.event)]
        if request_identity(original.request) != request_identity(record.event):
            answers.append(_conflict(record, original.request))
        else:
            answers.append(_output(original))
    return answers


async def _assess(connection: Any, requests: list[AccountRequest]) -> list[tuple[str, ...]]:
    withdrawals = [r for r in requests if isinstance(r, WithdrawalRequested)]
    blocked: dict[str, str] = {}
    txn_max: dict[str, int] = {}
    if withdrawals:
        rows = await connection.fetch(
            "SELECT value, reason FROM risk_blocklist WHERE kind = 'payer' AND value = ANY($1::text[])",
            sorted({w.account_id for w in withdrawals}),
        )
        blocked = {row["value"]: row["reason"] for row in rows}
        rows = await connection.fetch(
            "SELECT currency, txn_amount_max_minor FROM risk_limits WHERE currency = ANY($1::text[])",
            sorted({w.currency for w in withdrawals}),
        )
        txn_max = {row["currency"].strip(): row["txn_amount_max_minor"] for row in rows}
    return [assess_withdrawal(r, blocked, txn_max) if isinstance(r, WithdrawalRequested) else () for r in requests]


async def _stored(connection: Any, keys: Sequence[RequestKey]) -> dict[RequestKey, StoredRequest]:
    rows = await connection.fetch(
        """SELECT r.kind, r.request_id, r.decision, r.reasons, r.assessed_at, r.request FROM account_requests r
           JOIN unnest($1::text[], $2::text[]) AS v(kind, id) ON r.kind = v.kind AND r.request_id = v.id""",
        [k for k, _ in keys],
        [i for _, i in keys],
    )
    return {
        (row["kind"], row["request_id"]): StoredRequest(
            msgspec.convert(row["request"], REQUEST_TYPES[row["kind"]]),
            row["decision"] == "approved",
            list(row["reasons"]),
            row["assessed_at"],
        )
        for row in rows
    }


async def _store(connection: Any, requests: list[AccountRequest], reasons: list[tuple[str, ...]],
                 now: datetime) -> None:  # fmt: skip
    await connection.execute(
        """INSERT INTO account_requests (kind, request_id, account_id, created_at, decision, reasons, assessed_at,
                                         request)
           SELECT v.kind, v.id, v.account, v.created, v.decision, string_to_array(v.reasons, chr(31)), $7, v.request
           FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[], $8::jsonb[])
                AS v(kind, id, account, created, decision, reasons, request)
           ON CONFLICT (kind, request_id) DO NOTHING""",
        [request_kind(r) for r in requests],
        [r.request_id for r in requests],
        [r.account_id for r in requests],
        [r.created_at for r in requests],
        ["rejected" if why else "approved" for why in reasons],
        [join_reasons(why) for why in reasons],
        now,
        [msgspec.to_builtins(r) for r in requests],
    )


def _conflict(record: Accepted[AccountRequest], original: AccountRequest) -> Refused:
    kind = request_kind(original)
    return Refused(
        record.origin,
        "request_id",
        "idempotency_conflict",
        f"{kind} {original.request_id} was already requested as {request_identity(original)};"
        f" got {request_identity(record.event)}",
        record.raw or msgspec.json.encode(record.event),
    )


def _output(stored: StoredRequest) -> Output:
    request = stored.request
    kind = request_kind(request)
    if stored.approved:
        return Output(
            PAYMENTS_APPROVED,
            request.account_id,
            AccountRequestApproved(
                event_id=account_request_event_id(kind, request.request_id),
                kind=kind,
                request_id=request.request_id,
                account_id=request.account_id,
                assessed_at=stored.assessed_at,
            ),
        )
    return Output(
        ACCOUNTS_OUTCOMES,
        request.account_id,
        AccountOutcome(
            event_id=account_outcome_event_id(kind, request.request_id),
            kind=kind,
            request_id=request.request_id,
            account_id=request.account_id,
            status="rejected",
            stage="risk",
            reasons=stored.reasons,
            amount_minor=getattr(request, "amount_minor", None),
            currency=getattr(request, "currency", None),
            created_at=request.created_at,
            occurred_at=stored.assessed_at,
        ),
    )
