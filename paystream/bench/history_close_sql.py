"""The SQL that ends a history load: the payers' top-ups and the closes of the batches whose cut-off passed.

Run once, after every chunk of `paystream.bench.history_sql`, from the
accumulators those chunks filled (`hist_spend`, `hist_batch`).
"""

from __future__ import annotations

from paystream.bench.history_sql import CLOSED_AT, PUBLISHED_AT, iso_sql

# Payers top up at the start of each day they paid: the day's charges rounded
# up to their currency's top-up unit, as a deposit the funds stage would have
# applied (request, operation, `deposit:<request>` journal). Their balances
# then grow by what was deposited and not spent.
STAGE_TOPUPS_SQL = """
CREATE TEMP TABLE hist_topup ON COMMIT DROP AS
SELECT s.account_id, q.currency, s.spent_minor,
       'hist-topup:' || s.account_id || ':' || to_char(s.day, 'YYYYMMDD') AS request_id,
       ((s.spent_minor + q.topup_unit_minor - 1) / q.topup_unit_minor) * q.topup_unit_minor AS amount_minor,
       s.day::timestamp AT TIME ZONE 'UTC' AS created_at
FROM hist_spend s JOIN hist_payer p ON p.account_id = s.account_id AND p.pool = 'ordinary'
JOIN hist_currency q ON q.currency = p.currency
"""

TOPUP_INSERTS: tuple[tuple[str, str], ...] = (
    (
        "account_requests",
        f"""
        INSERT INTO account_requests (kind, request_id, account_id, created_at, decision, reasons, assessed_at,
                                      request)
        SELECT 'deposit', request_id, account_id, created_at, 'approved', '{{}}',
               created_at + interval '50 milliseconds',
               jsonb_build_object('schema', 'deposit.requested', 'v', 1, 'request_id', request_id,
                                  'account_id', account_id, 'amount_minor', amount_minor, 'currency', currency,
                                  'source_ref', 'paystream-history', 'created_at', {iso_sql("created_at")},
                                  'metadata', '{{}}'::jsonb)
        FROM hist_topup ORDER BY request_id
        """,
    ),
    (
        "journals",
        """
        INSERT INTO journals (journal_id, kind, currency, created_at, request_id)
        SELECT 'deposit:' || request_id, 'deposit', currency, created_at + interval '100 milliseconds', request_id
        FROM hist_topup ORDER BY request_id
        """,
    ),
    (
        "entries",
        """
        INSERT INTO entries (journal_id, account_id, currency, amount_minor, created_at)
        SELECT 'deposit:' || t.request_id, v.account_id, t.currency, v.amount_minor,
               t.created_at + interval '100 milliseconds'
        FROM hist_topup t
        CROSS JOIN LATERAL (VALUES ('platform:funding:' || t.currency, -t.amount_minor),
                                   (t.account_id, t.amount_minor)) AS v(account_id, amount_minor)
        ORDER BY t.request_id
        """,
    ),
    (
        "account_operations",
        """
        INSERT INTO account_operations (kind, request_id, account_id, status, reasons, amount_minor, currency,
                                        journal_id, decided_at)
        SELECT 'deposit', request_id, account_id, 'succeeded', '{}', amount_minor, currency,
               'deposit:' || request_id, created_at + interval '100 milliseconds'
        FROM hist_topup ORDER BY request_id
        """,
    ),
    (
        "accounts",
        """
        UPDATE accounts AS a SET balance_minor = a.balance_minor + v.deposited - v.spent
        FROM (SELECT account_id, sum(amount_minor) AS deposited, sum(spent_minor) AS spent
              FROM hist_topup GROUP BY account_id ORDER BY account_id) AS v
        WHERE a.account_id = v.account_id AND a.kind = 'customer'
        """,
    ),
)

# The batches whose cut-off passed are closed as the settlement timer closes
# them: a payout journal for a non-zero net, then the totals fixed, the
# outbox cursor at the batch's last payment and its outcomes published.
CLOSE_INSERTS: tuple[tuple[str, str], ...] = (
    (
        "journals",
        f"""
        INSERT INTO journals (journal_id, kind, batch_id, currency, created_at)
        SELECT 'pay:' || t.batch_id, 'payout', t.batch_id, c.currency, {CLOSED_AT}
        FROM hist_batch t JOIN settlement_batches c USING (batch_id)
        WHERE t.net_minor <> 0 ORDER BY t.batch_id
        """,
    ),
    (
        "entries",
        f"""
        INSERT INTO entries (journal_id, account_id, currency, amount_minor, created_at)
        SELECT 'pay:' || t.batch_id, v.account_id, c.currency, v.amount_minor, {CLOSED_AT}
        FROM hist_batch t JOIN settlement_batches c USING (batch_id)
        CROSS JOIN LATERAL (VALUES ('merchant:' || c.merchant_id || ':pending:' || c.currency, -t.net_minor),
                                   ('platform:payouts:' || c.currency, t.net_minor)) AS v(account_id, amount_minor)
        WHERE t.net_minor <> 0 ORDER BY t.batch_id
        """,
    ),
    (
        "settlement_batches",
        f"""
        UPDATE settlement_batches AS c SET status = 'closed', item_count = t.n, refund_count = 0,
               gross_minor = t.gross_minor, fee_minor = t.fee_minor, net_minor = t.net_minor,
               payout_journal_id = CASE WHEN t.net_minor <> 0 THEN 'pay:' || t.batch_id END,
               closed_at = {CLOSED_AT}, published_at = {PUBLISHED_AT}, outcomes_through = t.last_payment_id
        FROM hist_batch t WHERE c.batch_id = t.batch_id AND c.status = 'open'
        """,
    ),
)
