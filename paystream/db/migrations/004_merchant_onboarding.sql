-- Merchant onboarding: each merchant's settlement cycle, constraints that keep
-- onboarded merchants and their fee schedules well-formed, and a guard that no
-- two settlement batches of one merchant and currency overlap in time.

-- A merchant's settlement cycle (workers/cycles.py), NULL for the global
-- default (PAYSTREAM_SETTLEMENT_CYCLE_S):
--   daily   from one cut-off to the next: the first instant each day at which
--           the wall clock of `cycle_time_zone` (an IANA name) reads
--           `cycle_cutoff_hour`:00;
--   hourly  one UTC hour;
--   seconds fixed windows of `cycle_seconds` aligned to the Unix epoch.
ALTER TABLE merchants
    ADD COLUMN cycle_kind text,
    ADD COLUMN cycle_seconds integer,
    ADD COLUMN cycle_cutoff_hour smallint,
    ADD COLUMN cycle_time_zone text,
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

-- The same rules paystream/merchants/model.py applies, so a row written by
-- hand cannot be one the code refuses. Written with IS NOT NULL and coalesce:
-- a CHECK whose expression is NULL passes.
ALTER TABLE merchants
    -- IdText of schemas/payments.py: the id payments name the merchant by.
    ADD CONSTRAINT merchants_id_format CHECK (merchant_id ~ '^[A-Za-z0-9_.:-]{1,64}$'),
    ADD CONSTRAINT merchants_name_format
        CHECK (char_length(name) BETWEEN 1 AND 200 AND name = btrim(name) AND name !~ '[[:cntrl:]]'),
    ADD CONSTRAINT merchants_cycle_shape CHECK (coalesce(CASE cycle_kind
        WHEN 'daily' THEN cycle_cutoff_hour IS NOT NULL AND cycle_cutoff_hour BETWEEN 0 AND 23
                          AND cycle_time_zone IS NOT NULL AND cycle_seconds IS NULL
        WHEN 'hourly' THEN cycle_cutoff_hour IS NULL AND cycle_time_zone IS NULL AND cycle_seconds IS NULL
        -- At most 31 days, like the global setting: a batch's sums must fit in bigint (migration 003).
        WHEN 'seconds' THEN cycle_seconds IS NOT NULL AND cycle_seconds BETWEEN 1 AND 2678400
                            AND cycle_cutoff_hour IS NULL AND cycle_time_zone IS NULL
        ELSE cycle_kind IS NULL AND cycle_seconds IS NULL AND cycle_cutoff_hour IS NULL
             AND cycle_time_zone IS NULL
    END, false)),
    -- An IANA Area/Location name (or UTC) that PostgreSQL knows: AT TIME ZONE
    -- refuses an unknown one. POSIX strings such as 'UTC+3', which PostgreSQL
    -- accepts and Python's zoneinfo does not, are refused by the pattern.
    ADD CONSTRAINT merchants_cycle_time_zone CHECK (cycle_time_zone IS NULL OR (
        cycle_time_zone ~ '^(UTC|[A-Z][A-Za-z_]*(/[A-Za-z0-9_+-]+){1,2})$'
        AND (timestamptz '2000-01-01 00:00+00' AT TIME ZONE cycle_time_zone) IS NOT NULL));

ALTER TABLE merchant_fee_schedules
    ADD CONSTRAINT merchant_fee_schedules_currency_format CHECK (currency ~ '^[A-Z]{3}$'),
    -- schemas/money.py AMOUNT_MINOR_MAX: no fee part above the largest payment.
    ADD CONSTRAINT merchant_fee_schedules_amounts_max
        CHECK (fixed_minor <= 1000000000000000 AND min_minor <= 1000000000000000);

-- No two batches of one merchant and currency overlap: each payment belongs
-- to exactly one batch's span, whatever cycle changes happened between them
-- (the settlement stage cuts a new batch to the gap between existing ones;
-- this is the database's guard against a bug or a race). Batches written
-- before this migration under different global cycle settings may overlap;
-- they are marked `legacy_overlap` and left out of the guard, instead of the
-- migration failing on an old database.
CREATE EXTENSION IF NOT EXISTS btree_gist;

ALTER TABLE settlement_batches ADD COLUMN legacy_overlap boolean NOT NULL DEFAULT false;

UPDATE settlement_batches AS b SET legacy_overlap = true
FROM (
    SELECT batch_id, cycle_start,
           max(cycle_end) OVER (PARTITION BY merchant_id, currency ORDER BY cycle_start, batch_id
                                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS earlier_end
    FROM settlement_batches
) AS o
WHERE o.batch_id = b.batch_id AND o.earlier_end > o.cycle_start;

ALTER TABLE settlement_batches ADD CONSTRAINT settlement_batches_no_overlap
    EXCLUDE USING gist (merchant_id WITH =, currency WITH =, tstzrange(cycle_start, cycle_end) WITH &&)
    WHERE (NOT legacy_overlap);
