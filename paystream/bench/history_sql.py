"""The SQL that writes a payment history server-side (`paystream.bench.history_load` runs it).

Every row is a pure function of the payment's number `n` and the seed:
`hashint8extended(n, seed + k)` gives the draws (kind, payer, merchant,
amount, country, method, time), so a chunk is one `generate_series` and the
same history comes back for the same plan. The rows are those the stages
write for a payment (`workers/`), with the same ids, formats and amounts:
a chunk is staged once in a temporary table (`hist_chunk`, not WAL-logged)
and each table gets one `INSERT ... SELECT` from it. Nothing that guards
money is switched off: the tables' triggers, foreign keys and checks run on
every row.

The small temporary tables the chunk joins are filled before the first chunk:
- `hist_payer (pool, i, account_id, currency, available_minor, block_reason)`:
  the world's payers by pool (`ordinary`, `blocked`, `poor`), numbered from 0;
- `hist_pool (pool, n)`: how many payers each pool has;
- `hist_currency (currency, typical_minor, txn_max_minor, merchants, countries, topup_unit_minor)`;
- `hist_merchant (currency, i, merchant_id, fee_bps, fixed_minor, min_minor)`:
  the active merchants taking each currency, with their fee schedule;
and two accumulators kept for the whole load, which `paystream.bench.history_close_sql`
turns into the payers' top-ups and the batches' closes:
- `hist_spend (account_id, day, spent_minor)`: what each payer was charged per UTC day;
- `hist_batch (batch_id, n, gross_minor, fee_minor, net_minor, last_payment_id)`:
  the totals of each batch the history closes.
"""

from __future__ import annotations

# Shares of the history's payments, in hundredths of a percent: the generator's
# mix (`paystream.generator.MIX_PERCENT`) reduced to the kinds a history keeps
# (rejected over the per-payment limit, rejected for a blocked payer, declined
# for funds); the rest are ordinary payments, cleared and settled.
OVER_LIMIT_BELOW = 200
BLOCKED_BELOW = 300
POOR_BELOW = 500
MIX_DENOMINATOR = 10_000

SETUP_TABLES_SQL = """
CREATE TEMP TABLE hist_payer (pool text, i int, account_id text, currency bpchar(3), available_minor bigint,
                              block_reason text, PRIMARY KEY (pool, i));
CREATE TEMP TABLE hist_pool (pool text PRIMARY KEY, n int NOT NULL CHECK (n > 0));
CREATE TEMP TABLE hist_currency (currency bpchar(3) PRIMARY KEY, typical_minor bigint, txn_max_minor bigint,
                                 merchants int, countries text[], topup_unit_minor bigint);
CREATE TEMP TABLE hist_merchant (currency bpchar(3), i int, merchant_id text, fee_bps int, fixed_minor bigint,
                                 min_minor bigint, PRIMARY KEY (currency, i));
CREATE TEMP TABLE hist_spend (account_id text, day date, spent_minor bigint, PRIMARY KEY (account_id, day));
CREATE TEMP TABLE hist_batch (batch_id text PRIMARY KEY, n int, gross_minor bigint, fee_minor bigint,
                              net_minor bigint, last_payment_id text);
"""

# The platform's hot accounts the history posts to, created as the stages
# create them (ON CONFLICT DO NOTHING: the seed made some already).
HOT_ACCOUNTS_SQL = """
INSERT INTO accounts (account_id, kind, owner_id, currency)
SELECT 'merchant:' || merchant_id || ':pending:' || currency, 'merchant_pending', merchant_id, currency
FROM hist_merchant
UNION ALL
SELECT 'platform:' || k || ':' || currency, kind, 'platform', currency
FROM hist_currency CROSS JOIN (VALUES ('fees', 'fee_revenue'), ('payouts', 'payout_clearing'),
                                      ('funding', 'funding')) AS v(k, kind)
ON CONFLICT (account_id) DO NOTHING
"""

# $1 first n, $2 end n (exclusive), $3 seed, $4 payments in the old part,
# $5 old part's start, $6 old part's spacing (microseconds), $7 last day's
# start, $8 last day's spacing, $9 the settlement cycle, $10 the grace, $11
# the load's now: a batch whose cut-off passed by then is closed.
STAGE_CHUNK_SQL = f"""
CREATE TEMP TABLE hist_chunk ON COMMIT DROP AS
WITH g AS (
    SELECT n, hashint8extended(n, $3) AS h1, hashint8extended(n, $3 + 1) AS h2, hashint8extended(n, $3 + 2) AS h3
    FROM generate_series($1::bigint, $2::bigint - 1) AS n
), k AS (
    SELECT n, h1, h2, h3,
           CASE WHEN (h1 & 65535) % {MIX_DENOMINATOR} < {OVER_LIMIT_BELOW} THEN 'over_txn_limit'
                WHEN (h1 & 65535) % {MIX_DENOMINATOR} < {BLOCKED_BELOW} THEN 'blocked_payer'
                WHEN (h1 & 65535) % {MIX_DENOMINATOR} < {POOR_BELOW} THEN 'poor_payer'
                ELSE 'ordinary' END AS kind,
           -- Payments spaced evenly, each somewhere in its own slot: time grows with n.
           CASE WHEN n <= $4
                THEN $5::timestamptz + ((n - 1) + ((h3 >> 48) & 65535) / 65536.0)::float8 * $6::float8
                     * interval '1 microsecond'
                ELSE $7::timestamptz + ((n - $4 - 1) + ((h3 >> 48) & 65535) / 65536.0)::float8 * $8::float8
                     * interval '1 microsecond' END AS created_at,
           -- A normal draw from three uniform ones (variance 1), for a log-normal amount.
           ((((h3 & 65535) + ((h3 >> 16) & 65535) + ((h3 >> 32) & 65535)) / 65536.0 - 1.5) * 2)::float8 AS z
    FROM g
), p AS (
    SELECT k.*, p.account_id AS payer, p.currency, p.available_minor, p.block_reason,
           c.typical_minor, c.txn_max_minor, c.countries, m.merchant_id, m.fee_bps, m.fixed_minor, m.min_minor,
           least(c.typical_minor * 10, greatest(100, round(c.typical_minor * exp(0.6 * k.z))))::bigint AS usual_minor
    FROM k
    JOIN hist_pool o ON o.pool = CASE k.kind WHEN 'blocked_payer' THEN 'blocked' WHEN 'poor_payer' THEN 'poor'
                                             ELSE 'ordinary' END
    JOIN hist_payer p ON p.pool = o.pool AND p.i = ((k.h1 >> 16) & 2147483647) % o.n
    JOIN hist_currency c ON c.currency = p.currency
    JOIN hist_merchant m ON m.currency = p.currency AND m.i = (k.h2 & 2147483647) % c.merchants
), a AS (
    SELECT p.*,
           CASE kind WHEN 'over_txn_limit' THEN typical_minor * 60
                     WHEN 'poor_payer' THEN greatest(usual_minor, available_minor + 1)
                     ELSE usual_minor END AS amount_minor,
           created_at + (20 + ((h2 >> 16) & 255)) * interval '1 millisecond' AS assessed_at,
           date_bin($9::interval, created_at, timestamptz '1970-01-01 00:00:00+00') AS cycle_start
    FROM p
)
SELECT 'hist-' || lpad(n::text, 9, '0') AS payment_id, kind, payer, merchant_id, currency, amount_minor,
       countries[(1 + ((h2 >> 32) & 65535) % cardinality(countries))::int] AS country,
       (ARRAY['card', 'card', 'card', 'wallet', 'bank_transfer'])[(1 + ((h2 >> 48) & 65535) % 5)::int] AS method,
       created_at, assessed_at,
       assessed_at + interval '35 milliseconds' AS held_at,
       assessed_at + interval '70 milliseconds' AS cleared_at,
       assessed_at + interval '105 milliseconds' AS added_at,
       kind IN ('ordinary', 'poor_payer') AS approved,
       kind = 'ordinary' AS captured,
       CASE kind WHEN 'over_txn_limit' THEN ARRAY['txn_amount_limit: ' || amount_minor || ' > ' || txn_max_minor]
                 WHEN 'blocked_payer' THEN ARRAY['blocked_payer: ' || block_reason]
                 ELSE '{{}}'::text[] END AS risk_reasons,
       CASE WHEN kind = 'poor_payer'
            THEN ARRAY['insufficient_funds: available ' || available_minor || ' < amount ' || amount_minor]
            ELSE '{{}}'::text[] END AS decline_reasons,
       -- workers.fees: max(min, round_half_up(gross * bps / 10000) + fixed), capped at gross.
       least(amount_minor, greatest(min_minor, (2 * amount_minor * fee_bps + 10000) / 20000 + fixed_minor))
           AS fee_minor,
       cycle_start, cycle_start + $9::interval AS cycle_end,
       merchant_id || ':' || currency || ':' || to_char(cycle_start AT TIME ZONE 'UTC', 'YYYYMMDD"T"HH24MISS"Z"')
           AS batch_id,
       cycle_start + $9::interval + $10::interval AS cutoff_at,
       cycle_start + $9::interval + $10::interval <= $11::timestamptz AS closed,
       jsonb_build_object('source', 'history', 'kind', kind) AS metadata
FROM a
"""

# What a closed batch's times are: closed on the settlement timer a second
# after its cut-off, its payments marked settled and published just after
# (`c` is the staged chunk or the batch: both have the cut-off).
CLOSED_AT = "(c.cutoff_at + interval '1 second')"
SETTLED_AT = "(c.cutoff_at + interval '1100 milliseconds')"
PUBLISHED_AT = "(c.cutoff_at + interval '2 seconds')"


def iso_sql(column: str) -> str:
    """A timestamptz as msgspec writes a UTC datetime in JSON (`2026-01-02T03:04:05.123456Z`)."""
    return f"""to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


# (table, statement) in foreign-key order; each reads the staged chunk `c`.
CHUNK_INSERTS: tuple[tuple[str, str], ...] = (
    (
        "risk_decisions",
        f"""
        INSERT INTO risk_decisions (payment_id, payer_account, merchant_id, amount_minor, currency, created_at,
                                    decision, reasons, assessed_at, request)
        SELECT payment_id, payer, merchant_id, amount_minor, currency, created_at,
               CASE WHEN approved THEN 'approved' ELSE 'rejected' END, risk_reasons, assessed_at,
               jsonb_build_object('schema', 'payment.requested', 'v', 1, 'payment_id', payment_id,
                                  'payer_account', payer, 'merchant_id', merchant_id, 'amount_minor', amount_minor,
                                  'currency', currency, 'country', country, 'method', method,
                                  'created_at', {iso_sql("created_at")}, 'capture', 'automatic', 'capture_by', NULL,
                                  'metadata', metadata)
        FROM hist_chunk c ORDER BY payment_id
        """,
    ),
    (
        "payments",
        f"""
        INSERT INTO payments (payment_id, payer_account, merchant_id, amount_minor, currency, country, method,
                              metadata, created_at, requested_at, status, risk_reasons, risk_at, hold_id, held_at,
                              decline_reasons, declined_at, gross_minor, fee_minor, net_minor, journal_id,
                              cleared_at, batch_id, settled_at, updated_at, capture_mode)
        SELECT payment_id, payer, merchant_id, amount_minor, currency, country, method, metadata, created_at,
               assessed_at,
               CASE WHEN NOT approved THEN 'rejected' WHEN NOT captured THEN 'declined'
                    WHEN closed THEN 'settled' ELSE 'cleared' END,
               risk_reasons, assessed_at,
               CASE WHEN captured THEN 'hold:' || payment_id END, CASE WHEN captured THEN held_at END,
               decline_reasons, CASE WHEN approved AND NOT captured THEN held_at END,
               CASE WHEN captured THEN amount_minor END, CASE WHEN captured THEN fee_minor END,
               CASE WHEN captured THEN amount_minor - fee_minor END,
               CASE WHEN captured THEN 'clr:' || payment_id END, CASE WHEN captured THEN cleared_at END,
               CASE WHEN captured THEN batch_id END, CASE WHEN captured AND closed THEN {SETTLED_AT} END,
               CASE WHEN NOT approved THEN assessed_at WHEN NOT captured THEN held_at
                    WHEN closed THEN {SETTLED_AT} ELSE added_at END,
               'automatic'
        FROM hist_chunk c ORDER BY payment_id
        """,
    ),
    (
        "holds",
        """
        INSERT INTO holds (payment_id, hold_id, account_id, amount_minor, currency, status, reasons, created_at,
                           updated_at, captured_minor, released_minor)
        SELECT payment_id, 'hold:' || payment_id, payer, amount_minor, currency,
               CASE WHEN captured THEN 'captured' ELSE 'declined' END, decline_reasons, held_at,
               CASE WHEN captured THEN cleared_at ELSE held_at END,
               CASE WHEN captured THEN amount_minor ELSE 0 END, 0
        FROM hist_chunk c WHERE approved ORDER BY payment_id
        """,
    ),
    (
        "settlement_batches",
        """
        INSERT INTO settlement_batches (batch_id, merchant_id, currency, cycle_start, cycle_end, cutoff_at, status,
                                        opened_at)
        SELECT batch_id, merchant_id, currency, cycle_start, cycle_end, cutoff_at, 'open',
               min(added_at)
        FROM hist_chunk c WHERE captured
        GROUP BY batch_id, merchant_id, currency, cycle_start, cycle_end, cutoff_at
        ON CONFLICT (merchant_id, currency, cycle_start) DO NOTHING
        """,
    ),
    (
        "journals",
        """
        INSERT INTO journals (journal_id, kind, payment_id, currency, created_at)
        SELECT 'clr:' || payment_id, 'clearing', payment_id, currency, cleared_at
        FROM hist_chunk c WHERE captured ORDER BY payment_id
        """,
    ),
    (
        "entries",
        """
        INSERT INTO entries (journal_id, account_id, currency, amount_minor, created_at)
        SELECT 'clr:' || c.payment_id, v.account_id, c.currency, v.amount_minor, c.cleared_at
        FROM hist_chunk c
        CROSS JOIN LATERAL (VALUES (c.payer, -c.amount_minor),
                                   ('merchant:' || c.merchant_id || ':pending:' || c.currency,
                                    c.amount_minor - c.fee_minor),
                                   ('platform:fees:' || c.currency, c.fee_minor)) AS v(account_id, amount_minor)
        WHERE c.captured AND v.amount_minor <> 0
        ORDER BY c.payment_id
        """,
    ),
    (
        "clearings",
        """
        INSERT INTO clearings (payment_id, journal_id, payer_account, merchant_id, currency, gross_minor, fee_minor,
                               net_minor, event_time, cleared_at)
        SELECT payment_id, 'clr:' || payment_id, payer, merchant_id, currency, amount_minor, fee_minor,
               amount_minor - fee_minor, created_at, cleared_at
        FROM hist_chunk c WHERE captured ORDER BY payment_id
        """,
    ),
    (
        "settlement_items",
        """
        INSERT INTO settlement_items (payment_id, batch_id, merchant_id, currency, gross_minor, fee_minor, net_minor,
                                      event_time, added_at)
        SELECT payment_id, batch_id, merchant_id, currency, amount_minor, fee_minor, amount_minor - fee_minor,
               created_at, added_at
        FROM hist_chunk c WHERE captured ORDER BY payment_id
        """,
    ),
    (
        "risk_merchant_day_totals",
        """
        INSERT INTO risk_merchant_day_totals AS t (merchant_id, currency, day, approved_minor)
        SELECT merchant_id, currency, (created_at AT TIME ZONE 'UTC')::date, sum(amount_minor)
        FROM hist_chunk c WHERE approved GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (merchant_id, currency, day)
            DO UPDATE SET approved_minor = t.approved_minor + excluded.approved_minor
        """,
    ),
)

# The accumulators, from the same staged chunk (not counted as history rows).
ACCUMULATE_SQL = (
    """
    INSERT INTO hist_spend AS s (account_id, day, spent_minor)
    SELECT payer, (created_at AT TIME ZONE 'UTC')::date, sum(amount_minor) FROM hist_chunk WHERE captured
    GROUP BY 1, 2
    ON CONFLICT (account_id, day) DO UPDATE SET spent_minor = s.spent_minor + excluded.spent_minor
    """,
    """
    INSERT INTO hist_batch AS b (batch_id, n, gross_minor, fee_minor, net_minor, last_payment_id)
    SELECT batch_id, count(*), sum(amount_minor), sum(fee_minor), sum(amount_minor - fee_minor), max(payment_id)
    FROM hist_chunk WHERE captured AND closed GROUP BY batch_id
    ON CONFLICT (batch_id) DO UPDATE SET n = b.n + excluded.n, gross_minor = b.gross_minor + excluded.gross_minor,
        fee_minor = b.fee_minor + excluded.fee_minor, net_minor = b.net_minor + excluded.net_minor,
        last_payment_id = greatest(b.last_payment_id, excluded.last_payment_id)
    """,
)
