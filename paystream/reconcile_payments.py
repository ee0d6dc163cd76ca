"""The SQL of reconcile's invariants on a payment's path: its status agrees with its stages' records, and
every hold ends, on time, whole, and captures what clearing says.

Listed with their names and descriptions in `paystream.reconcile.INVARIANTS`;
`{hold_open_s_max}` is filled in from the setting when reconcile runs.
"""

from __future__ import annotations

HOLD_OPEN_WITHIN_BOUND_SQL = """
        SELECT payment_id, account_id, amount_minor, status, created_at, updated_at FROM holds
        WHERE (status = 'held' AND expires_at IS NULL AND created_at < now() - make_interval(secs => {hold_open_s_max}))
           OR (status = 'capturing' AND updated_at < now() - make_interval(secs => {hold_open_s_max}))
        """

HOLD_NOT_OPEN_PAST_DEADLINE_SQL = """
        SELECT payment_id, account_id, amount_minor, expires_at FROM holds
        WHERE status = 'held' AND expires_at < now() - make_interval(secs => {hold_open_s_max})
        """

HOLD_ENDS_WHOLE_SQL = """
        SELECT payment_id, status, amount_minor, captured_minor, released_minor FROM holds
        WHERE (status IN ('captured', 'released', 'voided', 'expired')
               AND captured_minor + released_minor <> amount_minor)
           OR (status IN ('held', 'capturing', 'declined') AND (captured_minor <> 0 OR released_minor <> 0))
           OR (status IN ('voided', 'expired', 'released') AND captured_minor <> 0)
        """

CAPTURED_AMOUNT_MATCHES_CLEARING_SQL = """
        SELECT h.payment_id, h.amount_minor, h.capture_minor, h.captured_minor, c.gross_minor
        FROM holds h JOIN clearings c USING (payment_id)
        WHERE h.status = 'captured' AND (
              h.captured_minor <> c.gross_minor OR c.gross_minor > h.amount_minor
              OR (h.capture_minor IS NOT NULL AND h.capture_minor <> c.gross_minor))
        """

PAYMENT_STATUS_MATCHES_STAGE_RECORDS_SQL = """
        SELECT p.payment_id, p.status,
               r.decision AS risk, h.status AS hold, c.payment_id IS NOT NULL AS cleared,
               i.batch_id, b.status AS batch_status
        FROM payments p
        LEFT JOIN risk_decisions r USING (payment_id)
        LEFT JOIN holds h USING (payment_id)
        LEFT JOIN clearings c USING (payment_id)
        LEFT JOIN settlement_items i USING (payment_id)
        LEFT JOIN settlement_batches b ON b.batch_id = i.batch_id
        WHERE r.payment_id IS NULL
           OR (p.status = 'rejected') <> (r.decision = 'rejected')
           OR (p.status = 'rejected' AND h.payment_id IS NOT NULL)
           OR (p.status = 'declined') <> (h.status IS NOT DISTINCT FROM 'declined')
           OR (p.status = 'held' AND h.status IS DISTINCT FROM 'held' AND h.status IS DISTINCT FROM 'capturing')
           OR (p.status = 'authorized') <> (p.capture_mode = 'manual' AND h.status IS NOT DISTINCT FROM 'held')
           OR (p.status = 'voided') <> (h.status IS NOT DISTINCT FROM 'voided')
           OR (p.status = 'expired') <> (h.status IS NOT DISTINCT FROM 'expired')
           OR (p.status IN ('cleared', 'settled') AND (c.payment_id IS NULL OR h.status IS DISTINCT FROM 'captured'))
           OR (p.status = 'approved' AND h.payment_id IS NOT NULL AND h.status <> 'declined'
               AND h.status <> 'held')
           OR (p.status = 'failed') <> (h.status IS NOT DISTINCT FROM 'released'
               OR (p.status = 'failed' AND h.payment_id IS NULL))
           OR (p.status = 'failed' AND c.payment_id IS NOT NULL)
           OR (p.status = 'settled' AND b.status IS DISTINCT FROM 'closed')
           OR (p.status <> 'settled' AND b.status = 'closed' AND b.published_at IS NOT NULL)
        """
