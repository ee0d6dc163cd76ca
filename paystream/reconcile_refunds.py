"""Reconcile's invariants for refunds and for what they do to merchants' money: (name, description, SQL).

`paystream.reconcile` lists them with the others. A refund may take a
merchant's pending account below zero (refunded after its batch was paid
out), so that account is checked against what its open settlement says
instead of against zero.
"""

from __future__ import annotations

REFUND_INVARIANTS: tuple[tuple[str, str, str], ...] = (
    (
        "refunds_within_captured",
        "a payment's refunds add up to its refunded amount, never more than was captured, and only a captured"
        " payment is refunded",
        """
        SELECT p.payment_id, p.status, p.gross_minor, p.refunded_minor, coalesce(r.total, 0) AS refunds
        FROM payments p
        LEFT JOIN (SELECT payment_id, sum(amount_minor) AS total FROM refunds GROUP BY payment_id) r USING (payment_id)
        WHERE p.refunded_minor <> coalesce(r.total, 0)
           OR p.refunded_minor > coalesce(p.gross_minor, 0)
           OR (p.refunded_minor > 0 AND p.status NOT IN ('cleared', 'settled'))
        """,
    ),
    (
        "refund_has_its_journal",
        "each refund has one refund journal: payer +amount, merchant pending -net back, fees -fee back; each refund"
        " journal and each succeeded refund request has its refund",
        """
        SELECT r.refund_id AS id, 'journal legs differ' AS problem
        FROM refunds r
        JOIN payments p USING (payment_id)
        LEFT JOIN (SELECT journal_id, count(*) AS n,
                          sum(amount_minor) FILTER (WHERE account_id NOT LIKE 'merchant:%'
                                                    AND account_id NOT LIKE 'platform:%') AS payer_leg,
                          sum(amount_minor) FILTER (WHERE account_id LIKE 'merchant:%') AS merchant_leg,
                          sum(amount_minor) FILTER (WHERE account_id LIKE 'platform:fees:%') AS fee_leg
                   FROM entries GROUP BY journal_id) e ON e.journal_id = r.journal_id
        WHERE e.journal_id IS NULL
           OR e.payer_leg IS DISTINCT FROM r.amount_minor
           OR coalesce(e.merchant_leg, 0) <> -r.net_back_minor
           OR coalesce(e.fee_leg, 0) <> -r.fee_back_minor
           OR r.account_id <> p.payer_account
        UNION ALL
        SELECT j.journal_id, 'refund journal without its refund'
        FROM journals j LEFT JOIN refunds r ON r.journal_id = j.journal_id
        WHERE j.kind = 'refund' AND r.refund_id IS NULL
        UNION ALL
        SELECT o.request_id, 'succeeded refund request without its refund'
        FROM account_operations o LEFT JOIN refunds r ON r.refund_id = o.request_id
        WHERE o.kind = 'refund' AND o.status = 'succeeded' AND r.refund_id IS NULL
        """,
    ),
    (
        "refund_settled_once",
        "each refund is taken off exactly one settlement batch, with its own amounts, within five minutes",
        """
        SELECT coalesce(r.refund_id, i.refund_id) AS refund_id, i.batch_id, r.net_back_minor, i.net_minor
        FROM refunds r FULL JOIN settlement_refund_items i USING (refund_id)
        WHERE r.refund_id IS NULL
           OR (i.refund_id IS NULL AND r.refunded_at < now() - interval '5 minutes')
           OR (i.refund_id IS NOT NULL AND (i.gross_minor, i.fee_minor, i.net_minor, i.merchant_id, i.currency)
               IS DISTINCT FROM (r.amount_minor, r.fee_back_minor, r.net_back_minor, r.merchant_id, r.currency))
        """,
    ),
    (
        "merchant_pending_matches_open_settlement",
        "a merchant's pending account holds the net of its payments not yet in a closed batch, minus the net back"
        " of its refunds not yet in a closed batch",
        """
        WITH expected AS (
            SELECT 'merchant:' || c.merchant_id || ':pending:' || c.currency AS account_id, c.net_minor AS amount
            FROM clearings c
            LEFT JOIN settlement_items i USING (payment_id)
            LEFT JOIN settlement_batches b ON b.batch_id = i.batch_id
            WHERE b.status IS DISTINCT FROM 'closed'
            UNION ALL
            SELECT 'merchant:' || r.merchant_id || ':pending:' || r.currency, -r.net_back_minor
            FROM refunds r
            LEFT JOIN settlement_refund_items i USING (refund_id)
            LEFT JOIN settlement_batches b ON b.batch_id = i.batch_id
            WHERE b.status IS DISTINCT FROM 'closed'
        ), wanted AS (SELECT account_id, sum(amount) AS total FROM expected GROUP BY account_id),
        held AS (
            SELECT a.account_id, coalesce(sum(e.amount_minor), 0) AS total
            FROM accounts a LEFT JOIN entries e USING (account_id)
            WHERE a.kind = 'merchant_pending' GROUP BY a.account_id
        )
        SELECT coalesce(h.account_id, w.account_id) AS account_id, coalesce(h.total, 0) AS balance,
               coalesce(w.total, 0) AS open_settlement
        FROM held h FULL JOIN wanted w USING (account_id)
        WHERE coalesce(h.total, 0) <> coalesce(w.total, 0)
        """,
    ),
)
