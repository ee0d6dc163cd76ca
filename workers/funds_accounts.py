"""The funds stage's reads and writes for account requests (open, close, deposit, withdrawal).

What funds applies comes from what risk stored and approved
(`account_requests`), never from the event on payments.approved, which only
names the request. Each applied request leaves one `account_operations` row
(the idempotency record: a repeat returns its outcome again) and, when money
moved, one journal (`deposit:<request_id>` or `withdrawal:<request_id>`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from paystream.db.arrays import join_reasons
from paystream.errors import ConcurrentChangeError
from paystream.ledger import funding_account, payout_clearing_account, post_journals
from paystream.stage.contract import Output
from schemas.accounts import (
    REQUEST_TYPES,
    AccountOutcome,
    AccountRequest,
    account_outcome_event_id,
)
from topology.topics import ACCOUNTS_OUTCOMES
from workers.account_rules import AccountDecision, AccountState

RequestKey = tuple[str, str]  # (kind, request_id)


async def approved_account_requests(connection: Any, keys: Sequence[RequestKey]) -> dict[RequestKey, AccountRequest]:
    """The requests risk stored and approved, by (kind, request_id)."""
    if not keys:
        return {}
    rows = await connection.fetch(
        """SELECT r.kind, r.request_id, r.request FROM account_requests r
           JOIN unnest($1::text[], $2::text[]) AS v(kind, id) ON r.kind = v.kind AND r.request_id = v.id
           WHERE r.decision = 'approved'""",
        [k for k, _ in keys],
        [i for _, i in keys],
    )
    return {
        (row["kind"], row["request_id"]): msgspec.convert(row["request"], REQUEST_TYPES[row["kind"]]) for row in rows
    }


async def stored_operations(connection: Any, keys: Sequence[RequestKey]) -> dict[RequestKey, AccountDecision]:
    if not keys:
        return {}
    rows = await connection.fetch(
        """SELECT o.* FROM account_operations o
           JOIN unnest($1::text[], $2::text[]) AS v(kind, id) ON o.kind = v.kind AND o.request_id = v.id""",
        [k for k, _ in keys],
        [i for _, i in keys],
    )
    return {
        (row["kind"], row["request_id"]): AccountDecision(
            row["kind"],
            row["request_id"],
            row["account_id"],
            row["status"] == "succeeded",
            tuple(row["reasons"]),
            row["amount_minor"],
            row["currency"].strip() if row["currency"] else None,
            row["journal_id"],
            row["decided_at"],
            payment_id=row["payment_id"],
        )
        for row in rows
    }


async def other_accounts(connection: Any, account_ids: Sequence[str]) -> dict[str, AccountState]:
    """Accounts of these ids that are not customer accounts: read, never locked (hot rows)."""
    rows = await connection.fetch(
        """SELECT account_id, kind, currency, status FROM accounts
           WHERE account_id = ANY($1::text[]) AND kind <> 'customer'""",
        list(account_ids),
    )
    return {
        row["account_id"]: AccountState(row["account_id"], row["currency"].strip(), row["status"], 0, 0, row["kind"])
        for row in rows
    }


async def store_operations(connection: Any, decisions: Sequence[AccountDecision], accounts: dict[str, AccountState],
                           now: datetime) -> None:  # fmt: skip
    """Open the new accounts, post the journals and record every decision (accounts' balances: `write_accounts`)."""
    opened = [a for a in accounts.values() if a.opened_now]
    if opened:
        inserted = await connection.fetch(
            """INSERT INTO accounts (account_id, kind, owner_id, currency, status, created_at)
               SELECT id, 'customer', o, c, 'open', $4 FROM unnest($1::text[], $2::text[], $3::text[]) AS v(id, o, c)
               ON CONFLICT (account_id) DO NOTHING RETURNING account_id""",
            [a.account_id for a in opened],
            [a.owner_id for a in opened],
            [a.currency for a in opened],
            now,
        )
        if len(inserted) != len(opened):
            # Another transaction opened one of these ids since we looked: decide again.
            raise ConcurrentChangeError(f"{len(opened) - len(inserted)} account(s) were opened meanwhile")
    journals = [d.journal for d in decisions if d.journal is not None]
    if journals:
        currencies = sorted({j.currency for j in journals})
        platform = [(funding_account(c), "funding", c) for c in currencies]
        platform += [(payout_clearing_account(c), "payout_clearing", c) for c in currencies]
        await connection.execute(
            """INSERT INTO accounts (account_id, kind, owner_id, currency)
               SELECT id, k, 'platform', c FROM unnest($1::text[], $2::text[], $3::text[]) AS v(id, k, c)
               ON CONFLICT (account_id) DO NOTHING""",
            [p[0] for p in platform],
            [p[1] for p in platform],
            [p[2] for p in platform],
        )
        await post_journals(connection, journals, now)
    await connection.execute(
        """INSERT INTO account_operations (kind, request_id, account_id, status, reasons, amount_minor, currency,
                                           journal_id, decided_at, payment_id)
           SELECT v.kind, v.id, v.account, v.status, string_to_array(v.reasons, chr(31)), v.amount, v.currency,
                  v.journal, $9, v.payment
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[],
                       $8::text[], $10::text[]) AS v(kind, id, account, status, reasons, amount, currency, journal,
                                                     payment)""",
        [d.kind for d in decisions],
        [d.request_id for d in decisions],
        [d.account_id for d in decisions],
        ["succeeded" if d.succeeded else "declined" for d in decisions],
        [join_reasons(d.reasons) for d in decisions],
        [d.amount_minor for d in decisions],
        [d.currency for d in decisions],
        [d.journal_id for d in decisions],
        now,
        [d.payment_id for d in decisions],
    )


async def write_accounts(connection: Any, accounts: dict[str, AccountState],
                         before: dict[str, tuple[int, int, str]]) -> None:  # fmt: skip
    """Write back every customer account whose balance, held amount or status changed in this batch."""
    changed = [
        a
        for a in accounts.values()
        if a.kind == "customer"
        and (a.balance_minor, a.held_minor, a.status) != before.get(a.account_id, (0, 0, "open"))
    ]
    if not changed:
        return
    changed.sort(key=lambda a: a.account_id)  # one lock order for every writer
    await connection.execute(
        """UPDATE accounts AS a SET balance_minor = v.balance, held_minor = v.held, status = v.status
           FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[]) AS v(id, balance, held, status)
           WHERE a.account_id = v.id""",
        [a.account_id for a in changed],
        [a.balance_minor for a in changed],
        [a.held_minor for a in changed],
        [a.status for a in changed],
    )


def account_outcome(request: AccountRequest, decision: AccountDecision) -> Output:
    """The outcome event of an applied request; its id is fixed by the request, so repeats are the same event."""
    return Output(
        ACCOUNTS_OUTCOMES,
        decision.account_id,
        AccountOutcome(
            event_id=account_outcome_event_id(decision.kind, decision.request_id),
            kind=decision.kind,  # type: ignore[arg-type]
            request_id=decision.request_id,
            account_id=decision.account_id,
            status="succeeded" if decision.succeeded else "declined",
            stage="funds",
            reasons=list(decision.reasons),
            amount_minor=decision.amount_minor,
            currency=decision.currency,  # type: ignore[arg-type]
            journal_id=decision.journal_id,
            created_at=request.created_at,
            occurred_at=decision.decided_at,
            payment_id=decision.payment_id,
        ),
    )
