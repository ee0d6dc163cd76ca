"""What the clearing stage reads and writes in PostgreSQL: holds, clearings, fee schedules, the journal.

Kept apart from `workers.clearing`, which decides: this module only moves
rows. Every write is set-based over the batch; the hold rows are locked in
payment id order, the payers' rows updated in account id order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from paystream.ledger import (
    clearing_journal,
    fee_revenue_account,
    merchant_pending_account,
    post_journals,
)
from schemas.money import CurrencyCode
from workers.failures import Identity
from workers.fees import FeeSchedule


@dataclass(frozen=True, slots=True)
class Cleared:
    """A capture: `gross_minor` is what was captured, `amount_minor` the payment's (authorized) amount."""

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
    amount_minor: int

    @property
    def identity(self) -> Identity:
        return (self.payer_account, self.merchant_id, self.amount_minor, self.currency)


@dataclass(frozen=True, slots=True)
class OpenHold:
    """A hold ready for capture joined with its payment row: the stored truth a capture is made from.

    `capture_minor` is what to capture: the whole amount (automatic capture),
    or what a manual capture accepted by funds asked for.
    """

    payment_id: str
    payer_account: str
    merchant_id: str
    amount_minor: int
    currency: CurrencyCode
    created_at: datetime
    capture_minor: int

    @property
    def identity(self) -> Identity:
        return (self.payer_account, self.merchant_id, self.amount_minor, self.currency)


async def stored_clearings(connection: Any, payment_ids: list[str]) -> dict[str, Cleared]:
    rows = await connection.fetch(
        """SELECT c.payment_id, c.payer_account, c.merchant_id, c.currency, c.gross_minor, c.fee_minor, c.net_minor,
                  c.journal_id, c.event_time, c.cleared_at, p.amount_minor
           FROM clearings c JOIN payments p USING (payment_id) WHERE c.payment_id = ANY($1::text[])""",
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
            row["amount_minor"],
        )
        for row in rows
    }


async def lock_holds(connection: Any, payment_ids: list[str]) -> tuple[dict[str, OpenHold], dict[str, str]]:
    """Lock every hold row of the batch (whatever its status); return those ready for capture and every status.

    Ready: an automatic capture's open hold, or a manual one funds accepted a
    capture for (`capturing`). A manual hold still waiting is not: it is
    captured only when a capture request says so.
    """
    rows = await connection.fetch(
        """SELECT h.payment_id, h.status, h.account_id, h.amount_minor, h.currency, h.capture_minor,
                  p.merchant_id, p.created_at, p.capture_mode
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
            row["capture_minor"] or row["amount_minor"],
        )
        for row in rows
        if (row["status"], row["capture_mode"]) in (("held", "automatic"), ("capturing", "manual"))
    }
    return open_holds, {row["payment_id"]: row["status"] for row in rows}


async def fee_schedules(connection: Any, holds: list[OpenHold]) -> dict[tuple[str, str], FeeSchedule]:
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


async def store_clearings(connection: Any, new: list[Cleared], now: datetime) -> None:
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
    # The captured amount leaves the balance; the whole hold stops being held
    # (a partial capture releases the rest).
    await connection.execute(
        """UPDATE holds AS h SET status = 'captured', captured_minor = v.captured,
                  released_minor = h.amount_minor - v.captured, updated_at = $3
           FROM unnest($1::text[], $2::bigint[]) AS v(id, captured)
           WHERE h.payment_id = v.id AND h.status IN ('held', 'capturing')""",
        [c.payment_id for c in new],
        [c.gross_minor for c in new],
        now,
    )
    debited: dict[str, int] = {}
    unheld: dict[str, int] = {}
    for c in new:
        debited[c.payer_account] = debited.get(c.payer_account, 0) + c.gross_minor
        unheld[c.payer_account] = unheld.get(c.payer_account, 0) + c.amount_minor
    payers = sorted(debited)
    await connection.execute(
        """UPDATE accounts AS a SET balance_minor = a.balance_minor - v.debited,
                                    held_minor = a.held_minor - v.unheld
           FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS v(id, debited, unheld) WHERE a.account_id = v.id""",
        payers,
        [debited[p] for p in payers],
        [unheld[p] for p in payers],
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
