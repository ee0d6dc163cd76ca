-- The merchant daily limit read every approval of the merchant's day on every
-- risk batch: work that grew with the day's volume (profiled: the third most
-- expensive statement after 40,000 payments, and unbounded). One running total
-- per (merchant, currency, UTC day), added to in the same transaction that
-- stores the decisions, makes that read one row per merchant-day.
CREATE TABLE risk_merchant_day_totals (
    merchant_id     text NOT NULL,
    currency        char(3) NOT NULL,
    day             date NOT NULL,
    approved_minor  bigint NOT NULL CHECK (approved_minor >= 0),
    PRIMARY KEY (merchant_id, currency, day)
);

INSERT INTO risk_merchant_day_totals (merchant_id, currency, day, approved_minor)
SELECT merchant_id, currency, (created_at AT TIME ZONE 'UTC')::date, sum(amount_minor)
FROM risk_decisions
WHERE decision = 'approved'
GROUP BY 1, 2, 3;

-- Only the daily-limit query read approvals by merchant.
DROP INDEX risk_decisions_merchant_idx;
