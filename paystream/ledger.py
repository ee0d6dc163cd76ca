"""The double-entry ledger: account naming, journal building and its one SQL writer.

Entries are signed minor units; an account's balance is the sum of its
entries. Every journal sums to zero in its one currency: `Journal` asserts it
when it is built, and `paystream reconcile` checks it again in the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any


def merchant_pending_account(merchant_id: str, currency: str) -> str:
    return f"merchant:{merchant_id}:pending:{currency}"


def fee_revenue_account(currency: str) -> str:
    return f"platform:fees:{currency}"


def payout_clearing_account(currency: str) -> str:
    return f"platform:payouts:{currency}"


def funding_account(currency: str) -> str:
    return f"platform:funding:{currency}"


@dataclass(frozen=True, slots=True)
class Journal:
    journal_id: str
    kind: str
    currency: str
    # (account_id, signed amount); zero legs are dropped.
    legs: tuple[tuple[str, int], ...]
    payment_id: str | None = None
    batch_id: str | None = None
    # The account request (deposit, withdrawal) the journal answers.
    request_id: str | None = None

    def __post_init__(self) -> None:
        assert self.legs, f"journal {self.journal_id} has no entries"
        assert all(amount != 0 for _, amount in self.legs), self.legs
        assert sum(amount for _, amount in self.legs) == 0, f"journal {self.journal_id} does not balance"


def journal(
    journal_id: str,
    kind: str,
    currency: str,
    legs: Sequence[tuple[str, int]],
    payment_id: str | None = None,
    batch_id: str | None = None,
    request_id: str | None = None,
) -> Journal:
    legs = tuple(leg for leg in legs if leg[1] != 0)
    return Journal(journal_id, kind, currency, legs, payment_id, batch_id, request_id)


def clearing_journal(
    payment_id: str, payer_account: str, merchant_id: str, currency: str, fee_minor: int, net_minor: int
) -> Journal:
    """Payer pays gross; the merchant's pending settlement gets net; the platform keeps the fee."""
    return journal(
        f"clr:{payment_id}",
        "clearing",
        currency,
        [
            (payer_account, -(fee_minor + net_minor)),
            (merchant_pending_account(merchant_id, currency), net_minor),
            (fee_revenue_account(currency), fee_minor),
        ],
        payment_id=payment_id,
    )


async def post_journals(connection: Any, journals: Sequence[Journal], at: datetime) -> None:
    """Insert journals and their entries with two set-based statements."""
    if not journals:
        return
    await connection.execute(
        """
        INSERT INTO journals (journal_id, kind, payment_id, batch_id, currency, created_at, request_id)
        SELECT j, k, p, b, c, $6, r
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $7::text[]) AS v(j, k, p, b, c, r)
        """,
        [j.journal_id for j in journals],
        [j.kind for j in journals],
        [j.payment_id for j in journals],
        [j.batch_id for j in journals],
        [j.currency for j in journals],
        at,
        [j.request_id for j in journals],
    )
    legs = [(j.journal_id, account, j.currency, amount) for j in journals for account, amount in j.legs]
    await connection.execute(
        """
        INSERT INTO entries (journal_id, account_id, currency, amount_minor, created_at)
        SELECT j, a, c, m, $5 FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) AS v(j, a, c, m)
        """,
        [leg[0] for leg in legs],
        [leg[1] for leg in legs],
        [leg[2] for leg in legs],
        [leg[3] for leg in legs],
        at,
    )
