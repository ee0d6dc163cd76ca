"""Reconciliation: every invariant of the money model, checked in SQL at any moment.

Each check is a query that returns the rows violating it (empty = holds).
Only what must hold at every instant is checked: a payment in flight between
two stages is not a violation, a payment with two clearing journals is.
The queries for deposits, withdrawals, closed accounts and the platform
accounts they move money through are in `paystream.reconcile_accounts`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from paystream.reconcile_accounts import (
    CLOSED_ACCOUNT_HOLDS_NOTHING_SQL,
    FUNDING_MATCHES_DEPOSITS_SQL,
    PAYOUTS_MATCH_WITHDRAWALS_AND_BATCHES_SQL,
    request_journal_sql,
)
from paystream.reconcile_payments import (
    CAPTURED_AMOUNT_MATCHES_CLEARING_SQL,
    HOLD_ENDS_WHOLE_SQL,
    HOLD_NOT_OPEN_PAST_DEADLINE_SQL,
    HOLD_OPEN_WITHIN_BOUND_SQL,
    PAYMENT_STATUS_MATCHES_STAGE_RECORDS_SQL,
)
from paystream.reconcile_refunds import REFUND_INVARIANTS

EXAMPLES_MAX = 20


@dataclass(frozen=True, slots=True)
class Invariant:
    name: str
    description: str
    sql: str


INVARIANTS: tuple[Invariant, ...] = (
    Invariant(
        "payment_status_matches_stage_records",
        "each payment's one status agrees with what its stages recorded",
        PAYMENT_STATUS_MATCHES_STAGE_RECORDS_SQL,
    ),
    Invariant(
        "journal_balances",
        "every journal's entries sum to zero, in the journal's currency, and no journal is empty",
        """
        SELECT j.journal_id, j.currency, coalesce(sum(e.amount_minor), 0) AS total, count(e.entry_id) AS entries,
               count(*) FILTER (WHERE e.currency <> j.currency) AS foreign_entries
        FROM journals j LEFT JOIN entries e USING (journal_id)
        GROUP BY j.journal_id, j.currency
        HAVING coalesce(sum(e.amount_minor), 0) <> 0 OR count(e.entry_id) = 0
            OR count(*) FILTER (WHERE e.currency <> j.currency) > 0
        """,
    ),
    Invariant(
        "ledger_sums_to_zero_per_currency",
        "the sum of all entries per currency is zero",
        "SELECT currency, sum(amount_minor) AS total FROM entries GROUP BY currency HAVING sum(amount_minor) <> 0",
    ),
    Invariant(
        "customer_balance_matches_entries",
        "a customer account's balance equals the sum of its entries",
        """
        SELECT a.account_id, a.balance_minor, coalesce(e.total, 0) AS entries_total
        FROM accounts a
        LEFT JOIN (SELECT account_id, sum(amount_minor) AS total FROM entries GROUP BY account_id) e
            USING (account_id)
        WHERE a.kind = 'customer' AND a.balance_minor <> coalesce(e.total, 0)
        """,
    ),
    Invariant(
        "customer_held_matches_open_holds",
        "a customer account's held amount equals the sum of its open holds (held, or capturing)",
        """
        SELECT a.account_id, a.held_minor, coalesce(h.total, 0) AS open_holds
        FROM accounts a
        LEFT JOIN (SELECT account_id, sum(amount_minor) AS total FROM holds WHERE status IN ('held', 'capturing')
                   GROUP BY account_id) h USING (account_id)
        WHERE a.kind = 'customer' AND a.held_minor <> coalesce(h.total, 0)
        """,
    ),
    Invariant(
        "closed_account_holds_nothing",
        "a closed customer account has balance 0, held 0 and no open hold",
        CLOSED_ACCOUNT_HOLDS_NOTHING_SQL,
    ),
    Invariant(
        "deposit_has_its_journal",
        "each succeeded deposit has one deposit journal, funding -amount and account +amount in its currency;"
        " each deposit journal has its succeeded deposit",
        request_journal_sql("deposit"),
    ),
    Invariant(
        "withdrawal_has_its_journal",
        "each succeeded withdrawal has one withdrawal journal, account -amount and payout clearing +amount in its"
        " currency; each withdrawal journal has its succeeded withdrawal",
        request_journal_sql("withdrawal"),
    ),
    Invariant(
        "funding_matches_deposits",
        "per currency, the funding account's entries total -(succeeded deposits) plus what legacy funding journals"
        " posted there",
        FUNDING_MATCHES_DEPOSITS_SQL,
    ),
    Invariant(
        "payout_clearing_matches_payouts",
        "per currency, the payout-clearing account's entries total the succeeded withdrawals plus closed batches' net",
        PAYOUTS_MATCH_WITHDRAWALS_AND_BATCHES_SQL,
    ),
    Invariant(
        "available_not_negative",
        "no customer's available balance is negative; no fee account is overdrawn (merchant pending and payout"
        " accounts may go below zero after refunds: they are checked against settlement instead)",
        """
        SELECT account_id, kind, balance_minor - held_minor AS available
        FROM accounts WHERE kind = 'customer' AND balance_minor - held_minor < 0
        UNION ALL
        SELECT a.account_id, a.kind, sum(e.amount_minor)
        FROM accounts a JOIN entries e USING (account_id)
        WHERE a.kind = 'fee_revenue'
        GROUP BY a.account_id, a.kind HAVING sum(e.amount_minor) < 0
        """,
    ),
    Invariant(
        "one_effect_per_payment",
        "at most one hold, clearing record and clearing journal per payment, one payout per batch",
        """
        SELECT 'clearing journal' AS effect, payment_id AS id, count(*) AS n FROM journals
        WHERE kind = 'clearing' GROUP BY payment_id HAVING count(*) > 1
        UNION ALL
        SELECT 'payout journal', batch_id, count(*) FROM journals
        WHERE kind = 'payout' GROUP BY batch_id HAVING count(*) > 1
        UNION ALL
        SELECT 'clearing entries', journal_id, count(*) FROM entries e JOIN journals j USING (journal_id)
        WHERE j.kind = 'clearing' GROUP BY journal_id HAVING count(*) > 3
        """,
    ),
    Invariant(
        "clearing_matches_journal",
        "each clearing's journal debits the payer gross and credits net and fee",
        """
        SELECT c.payment_id, c.gross_minor, c.fee_minor, c.net_minor,
               sum(e.amount_minor) FILTER (WHERE e.account_id = c.payer_account) AS payer_leg
        FROM clearings c JOIN entries e ON e.journal_id = c.journal_id
        GROUP BY c.payment_id, c.gross_minor, c.fee_minor, c.net_minor
        HAVING coalesce(sum(e.amount_minor) FILTER (WHERE e.account_id = c.payer_account), 0) <> -c.gross_minor
            OR coalesce(sum(e.amount_minor) FILTER (WHERE e.amount_minor > 0), 0) <> c.gross_minor
        """,
    ),
    Invariant(
        "captured_hold_has_clearing",
        "a captured hold has its clearing record, and a clearing has a captured hold",
        """
        SELECT payment_id, h.status, c.payment_id IS NOT NULL AS cleared
        FROM holds h FULL JOIN clearings c USING (payment_id)
        WHERE (h.status IS NOT DISTINCT FROM 'captured') <> (c.payment_id IS NOT NULL)
        """,
    ),
    Invariant(
        "closed_batch_totals",
        "a closed batch's totals equal its payment items' sums minus its refund items' sums, gross = fee + net,"
        " and its payout moves net (the other way when negative)",
        """
        SELECT b.batch_id, b.item_count, b.refund_count, b.gross_minor, b.fee_minor, b.net_minor,
               coalesce(i.n, 0) AS items, coalesce(r.n, 0) AS refunds, coalesce(p.amount, 0) AS payout
        FROM settlement_batches b
        LEFT JOIN (SELECT batch_id, count(*) AS n, sum(gross_minor) AS gross, sum(fee_minor) AS fee,
                          sum(net_minor) AS net FROM settlement_items GROUP BY batch_id) i USING (batch_id)
        LEFT JOIN (SELECT batch_id, count(*) AS n, sum(gross_minor) AS gross, sum(fee_minor) AS fee,
                          sum(net_minor) AS net FROM settlement_refund_items GROUP BY batch_id) r USING (batch_id)
        LEFT JOIN (SELECT j.batch_id, sum(e.amount_minor) FILTER (WHERE e.account_id LIKE 'platform:payouts:%')
                              AS amount
                   FROM journals j JOIN entries e USING (journal_id) WHERE j.kind = 'payout'
                   GROUP BY j.batch_id) p USING (batch_id)
        WHERE b.status = 'closed' AND (
              b.item_count <> coalesce(i.n, 0) OR coalesce(b.refund_count, 0) <> coalesce(r.n, 0)
           OR b.gross_minor <> coalesce(i.gross, 0) - coalesce(r.gross, 0)
           OR b.fee_minor <> coalesce(i.fee, 0) - coalesce(r.fee, 0)
           OR b.net_minor <> coalesce(i.net, 0) - coalesce(r.net, 0)
           OR b.gross_minor <> b.fee_minor + b.net_minor
           OR coalesce(p.amount, 0) <> b.net_minor
           OR (b.net_minor <> 0) <> (b.payout_journal_id IS NOT NULL))
        """,
    ),
    Invariant(
        "items_match_clearings",
        "every settlement item carries exactly the amounts clearing recorded for its payment",
        """
        SELECT i.payment_id, i.gross_minor, i.fee_minor, i.net_minor, c.gross_minor AS cleared_gross
        FROM settlement_items i LEFT JOIN clearings c USING (payment_id)
        WHERE c.payment_id IS NULL OR (i.gross_minor, i.fee_minor, i.net_minor, i.merchant_id, i.currency)
              <> (c.gross_minor, c.fee_minor, c.net_minor, c.merchant_id, c.currency)
        """,
    ),
    Invariant(
        "settled_once_and_none_missing",
        "a payment is settled only through a closed batch; no payment cleared over 5 minutes ago"
        " is missing from every batch",
        """
        SELECT coalesce(p.payment_id, i.payment_id) AS payment_id, p.status, i.batch_id, b.status AS batch_status
        FROM payments p
        FULL JOIN settlement_items i USING (payment_id)
        LEFT JOIN settlement_batches b ON b.batch_id = i.batch_id
        WHERE p.payment_id IS NULL
           OR (p.status = 'settled' AND (i.payment_id IS NULL OR b.status <> 'closed'))
           OR (i.payment_id IS NOT NULL AND b.status = 'closed' AND b.published_at IS NOT NULL
               AND p.status <> 'settled')
           OR (p.status = 'cleared' AND i.payment_id IS NULL AND p.cleared_at < now() - interval '5 minutes')
        """,
    ),
    Invariant(
        "hold_open_within_bound",
        "no automatic-capture hold stays open, and no manual capture waits for clearing, longer than"
        " PAYSTREAM_HOLD_OPEN_S_MAX: every hold ends captured or released",
        HOLD_OPEN_WITHIN_BOUND_SQL,
    ),
    Invariant(
        "hold_not_open_past_deadline",
        "no manual-capture hold is open past its deadline plus PAYSTREAM_HOLD_OPEN_S_MAX: uncaptured holds expire",
        HOLD_NOT_OPEN_PAST_DEADLINE_SQL,
    ),
    Invariant(
        "hold_ends_whole",
        "an ended hold's captured and released amounts add up to what it held; an open one has neither",
        HOLD_ENDS_WHOLE_SQL,
    ),
    Invariant(
        "captured_amount_matches_clearing",
        "a captured hold captured exactly its clearing's gross, and a manual capture never more than it held",
        CAPTURED_AMOUNT_MATCHES_CLEARING_SQL,
    ),
    Invariant(
        "risk_day_totals_match_decisions",
        "each merchant's running daily total of approvals equals the sum of its approved risk decisions that day",
        """
        SELECT coalesce(t.merchant_id, d.merchant_id) AS merchant_id, coalesce(t.currency, d.currency) AS currency,
               coalesce(t.day, d.day) AS day, t.approved_minor AS running_total, d.approved_minor AS decided
        FROM risk_merchant_day_totals t
        FULL JOIN (SELECT merchant_id, currency, (created_at AT TIME ZONE 'UTC')::date AS day,
                          sum(amount_minor) AS approved_minor
                   FROM risk_decisions WHERE decision = 'approved' GROUP BY 1, 2, 3) d
          ON d.merchant_id = t.merchant_id AND d.currency = t.currency AND d.day = t.day
        WHERE t.approved_minor IS DISTINCT FROM d.approved_minor
        """,
    ),
    *(Invariant(name, description, sql) for name, description, sql in REFUND_INVARIANTS),
)


@dataclass(frozen=True, slots=True)
class Violation:
    invariant: str
    total: int
    examples: list[dict[str, Any]]

    def __str__(self) -> str:
        shown = "; ".join(", ".join(f"{k}={v}" for k, v in row.items()) for row in self.examples[:5])
        return f"{self.invariant}: {self.total} violations, e.g. {shown}"


@dataclass
class ReconcileReport:
    checked: list[str] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def failures(self) -> list[Violation]:
        return list(self.violations)


async def reconcile(connection: Any, own_snapshot: bool = True, hold_open_s_max: int = 3_600) -> ReconcileReport:
    """Run every invariant in one repeatable-read snapshot, so checks see one consistent state.

    With `own_snapshot=False` the checks run in the caller's open transaction instead.
    """
    if not own_snapshot:
        return await _check_all(connection, hold_open_s_max)
    async with connection.transaction(isolation="repeatable_read", readonly=True):
        return await _check_all(connection, hold_open_s_max)


async def _check_all(connection: Any, hold_open_s_max: int) -> ReconcileReport:
    report = ReconcileReport()
    for invariant in INVARIANTS:
        # The bound is a validated integer setting, not input: formatting it in is safe.
        sql = invariant.sql.replace("{hold_open_s_max}", str(int(hold_open_s_max)))
        rows = await connection.fetch(f"SELECT * FROM ({sql}) v LIMIT {EXAMPLES_MAX + 1}")
        report.checked.append(invariant.name)
        if rows:
            total = len(rows)
            if total > EXAMPLES_MAX:
                total = await connection.fetchval(f"SELECT count(*) FROM ({sql}) v")
            report.violations.append(Violation(invariant.name, total, [_example(r) for r in rows[:EXAMPLES_MAX]]))
    return report


def _example(row: Any) -> dict[str, Any]:
    """A violating row for people and JSON: sums of minor units come back as numeric (Decimal, which may
    print as 1.18026E+9); they are whole numbers, shown as int."""
    return {k: int(v) if isinstance(v, Decimal) and v == v.to_integral_value() else v for k, v in row.items()}
