-- A payment accepted by risk must always reach a terminal status, even when a
-- later stage cannot go on with it (its record was isolated as poison, or
-- clearing found no fee schedule): it ends `failed`, with the reasons, and
-- any hold placed for it is `released` (held_minor given back).
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check CHECK (status IN
    ('approved', 'rejected', 'held', 'declined', 'failed', 'cleared', 'settled'));
ALTER TABLE payments ADD COLUMN failure_reasons text[] NOT NULL DEFAULT '{}';
ALTER TABLE payments ADD COLUMN failed_at timestamptz;

-- Open holds by age, for the reconcile check that no hold stays open past its bound.
CREATE INDEX holds_open_age_idx ON holds (created_at) WHERE status = 'held';

-- Settlement publishes a closed batch's outcomes in chunks of payments (bounded
-- work per tick, whatever the batch's size): the last payment id marked
-- settled and published so far. `published_at` is set once all are.
ALTER TABLE settlement_batches ADD COLUMN outcomes_through text;

-- Every sum paystream takes in bigint must fit. A settlement batch holds at
-- most one cycle (31 days at most, a validated setting) of one merchant's
-- approvals in one currency, plus late items of at most one day before (the
-- event-time window), plus the grace: under 33 merchant-days. The merchant
-- daily limit bounds each day, so capping it at 2^57 keeps a batch's gross
-- under 33 * 2^57 < 2^63: the close's sums can never overflow.
ALTER TABLE risk_limits ADD CONSTRAINT merchant_daily_limit_fits_a_batch
    CHECK (merchant_daily_amount_max_minor <= 144115188075855872);
