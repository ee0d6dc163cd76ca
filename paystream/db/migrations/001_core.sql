-- paystream core schema: accounts, the double-entry ledger, the per-stage
-- records that make each stage idempotent per payment, settlement batches,
-- dead letters and the per-partition offsets that fence stale consumers.

-- Accounts. `balance_minor` and `held_minor` are maintained only for customer
-- accounts, which exactly one payer-keyed consumer writes at a time. Hot
-- accounts (merchant pending/payout, fee revenue, funding) are only ever
-- credited by appending ledger entries: their balance is the sum of entries.
CREATE TABLE accounts (
    account_id     text PRIMARY KEY,
    kind           text NOT NULL CHECK (kind IN
                       ('customer', 'merchant_pending', 'payout_clearing', 'fee_revenue', 'funding')),
    owner_id       text NOT NULL,
    currency       char(3) NOT NULL,
    status         text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    balance_minor  bigint NOT NULL DEFAULT 0,
    held_minor     bigint NOT NULL DEFAULT 0 CHECK (held_minor >= 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- available = balance - held never goes negative for a customer.
    CONSTRAINT customer_available_not_negative
        CHECK (kind <> 'customer' OR balance_minor - held_minor >= 0)
);

CREATE TABLE merchants (
    merchant_id  text PRIMARY KEY,
    name         text NOT NULL,
    status       text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Fee = max(min_minor, round_half_up(gross * bps / 10000) + fixed_minor), capped at gross.
CREATE TABLE merchant_fee_schedules (
    merchant_id  text NOT NULL REFERENCES merchants (merchant_id),
    currency     char(3) NOT NULL,
    fee_bps      integer NOT NULL CHECK (fee_bps BETWEEN 0 AND 10000),
    fixed_minor  bigint NOT NULL CHECK (fixed_minor >= 0),
    min_minor    bigint NOT NULL CHECK (min_minor >= 0),
    PRIMARY KEY (merchant_id, currency)
);

-- Risk configuration: limits per currency and blocklists. Read by the risk
-- stage at each batch, so an operator's change applies within one batch.
CREATE TABLE risk_limits (
    currency                 char(3) PRIMARY KEY,
    txn_amount_max_minor     bigint NOT NULL CHECK (txn_amount_max_minor > 0),
    payer_10m_count_max      integer NOT NULL CHECK (payer_10m_count_max > 0),
    payer_10m_amount_max_minor bigint NOT NULL CHECK (payer_10m_amount_max_minor > 0),
    payer_24h_count_max      integer NOT NULL CHECK (payer_24h_count_max > 0),
    payer_24h_amount_max_minor bigint NOT NULL CHECK (payer_24h_amount_max_minor > 0),
    merchant_daily_amount_max_minor bigint NOT NULL CHECK (merchant_daily_amount_max_minor > 0)
);

CREATE TABLE risk_blocklist (
    kind    text NOT NULL CHECK (kind IN ('payer', 'merchant', 'country')),
    value   text NOT NULL,
    reason  text NOT NULL,
    PRIMARY KEY (kind, value)
);

-- One readable row per payment: its timeline, written stage by stage.
CREATE TABLE payments (
    payment_id      text PRIMARY KEY,
    payer_account   text NOT NULL,
    merchant_id     text NOT NULL,
    amount_minor    bigint NOT NULL CHECK (amount_minor > 0),
    currency        char(3) NOT NULL,
    country         char(2) NOT NULL,
    method          text NOT NULL,
    metadata        jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL,
    requested_at    timestamptz NOT NULL DEFAULT now(),
    status          text NOT NULL CHECK (status IN
                        ('approved', 'rejected', 'held', 'declined', 'cleared', 'settled')),
    risk_reasons    text[] NOT NULL DEFAULT '{}',
    risk_at         timestamptz,
    hold_id         text,
    held_at         timestamptz,
    decline_reasons text[] NOT NULL DEFAULT '{}',
    declined_at     timestamptz,
    gross_minor     bigint,
    fee_minor       bigint,
    net_minor       bigint,
    journal_id      text,
    cleared_at      timestamptz,
    batch_id        text,
    settled_at      timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payments_status_idx ON payments (status);
CREATE INDEX payments_merchant_idx ON payments (merchant_id, created_at);

-- The risk stage's record, keyed by payment: replays read it back instead of
-- deciding again, so the same input always yields the same decision.
CREATE TABLE risk_decisions (
    payment_id     text PRIMARY KEY,
    payer_account  text NOT NULL,
    merchant_id    text NOT NULL,
    amount_minor   bigint NOT NULL,
    currency       char(3) NOT NULL,
    created_at     timestamptz NOT NULL,
    decision       text NOT NULL CHECK (decision IN ('approved', 'rejected')),
    reasons        text[] NOT NULL,
    assessed_at    timestamptz NOT NULL,
    request        jsonb NOT NULL
);
CREATE INDEX risk_decisions_payer_idx ON risk_decisions (payer_account, created_at)
    WHERE decision = 'approved';
CREATE INDEX risk_decisions_merchant_idx ON risk_decisions (merchant_id, currency, created_at)
    WHERE decision = 'approved';

-- The funds stage's record: a hold, or a decline with its reasons.
CREATE TABLE holds (
    payment_id     text PRIMARY KEY,
    hold_id        text NOT NULL UNIQUE,
    account_id     text NOT NULL,
    amount_minor   bigint NOT NULL CHECK (amount_minor > 0),
    currency       char(3) NOT NULL,
    status         text NOT NULL CHECK (status IN ('held', 'captured', 'released', 'declined')),
    reasons        text[] NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);
CREATE INDEX holds_open_idx ON holds (account_id) WHERE status = 'held';

-- The ledger: journals of entries that sum to zero per currency. Entries are
-- append-only (a trigger refuses UPDATE and DELETE): a correction is a new journal.
CREATE TABLE journals (
    journal_id   text PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('funding', 'clearing', 'payout', 'correction')),
    payment_id   text,
    batch_id     text,
    currency     char(3) NOT NULL,
    created_at   timestamptz NOT NULL
);
CREATE UNIQUE INDEX journals_one_clearing_per_payment ON journals (payment_id) WHERE kind = 'clearing';
CREATE UNIQUE INDEX journals_one_payout_per_batch ON journals (batch_id) WHERE kind = 'payout';

CREATE TABLE entries (
    entry_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    journal_id    text NOT NULL REFERENCES journals (journal_id),
    account_id    text NOT NULL REFERENCES accounts (account_id),
    currency      char(3) NOT NULL,
    amount_minor  bigint NOT NULL CHECK (amount_minor <> 0),
    created_at    timestamptz NOT NULL
);
CREATE INDEX entries_journal_idx ON entries (journal_id);
CREATE INDEX entries_account_idx ON entries (account_id);

CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP;
END $$;
CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER journals_append_only BEFORE UPDATE OR DELETE ON journals
    FOR EACH ROW EXECUTE FUNCTION refuse_change();

-- The clearing stage's record.
CREATE TABLE clearings (
    payment_id     text PRIMARY KEY,
    journal_id     text NOT NULL UNIQUE REFERENCES journals (journal_id),
    payer_account  text NOT NULL,
    merchant_id    text NOT NULL,
    currency       char(3) NOT NULL,
    gross_minor    bigint NOT NULL CHECK (gross_minor > 0),
    fee_minor      bigint NOT NULL CHECK (fee_minor >= 0),
    net_minor      bigint NOT NULL CHECK (net_minor >= 0),
    event_time     timestamptz NOT NULL,
    cleared_at     timestamptz NOT NULL,
    CHECK (gross_minor = fee_minor + net_minor)
);

-- Settlement: a batch per (merchant, currency, cycle). Closing fixes the
-- totals; a trigger keeps closed batches immutable.
CREATE TABLE settlement_batches (
    batch_id           text PRIMARY KEY,
    merchant_id        text NOT NULL,
    currency           char(3) NOT NULL,
    cycle_start        timestamptz NOT NULL,
    cycle_end          timestamptz NOT NULL,
    cutoff_at          timestamptz NOT NULL,
    status             text NOT NULL CHECK (status IN ('open', 'closed')),
    item_count         integer,
    gross_minor        bigint,
    fee_minor          bigint,
    net_minor          bigint,
    payout_journal_id  text,
    opened_at          timestamptz NOT NULL,
    closed_at          timestamptz,
    -- Outbox mark: the closed event was produced and acknowledged.
    published_at       timestamptz,
    UNIQUE (merchant_id, currency, cycle_start)
);
CREATE INDEX settlement_batches_due_idx ON settlement_batches (cutoff_at) WHERE status = 'open';
CREATE INDEX settlement_batches_unpublished_idx ON settlement_batches (closed_at)
    WHERE status = 'closed' AND published_at IS NULL;

CREATE FUNCTION settlement_batch_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'settlement batches are never deleted';
    END IF;
    IF OLD.status = 'closed' AND (NEW.status, NEW.item_count, NEW.gross_minor, NEW.fee_minor,
            NEW.net_minor, NEW.payout_journal_id, NEW.closed_at)
        IS DISTINCT FROM (OLD.status, OLD.item_count, OLD.gross_minor, OLD.fee_minor,
            OLD.net_minor, OLD.payout_journal_id, OLD.closed_at) THEN
        RAISE EXCEPTION 'settlement batch % is closed and immutable', OLD.batch_id;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER settlement_batches_immutable BEFORE UPDATE OR DELETE ON settlement_batches
    FOR EACH ROW EXECUTE FUNCTION settlement_batch_immutable();

CREATE TABLE settlement_items (
    payment_id    text PRIMARY KEY,
    batch_id      text NOT NULL REFERENCES settlement_batches (batch_id),
    merchant_id   text NOT NULL,
    currency      char(3) NOT NULL,
    gross_minor   bigint NOT NULL,
    fee_minor     bigint NOT NULL,
    net_minor     bigint NOT NULL,
    event_time    timestamptz NOT NULL,
    added_at      timestamptz NOT NULL
);
CREATE INDEX settlement_items_batch_idx ON settlement_items (batch_id);

CREATE TABLE dead_letters (
    event_id          text PRIMARY KEY,
    stage             text NOT NULL,
    origin_topic      text NOT NULL,
    origin_partition  integer NOT NULL,
    origin_offset     bigint NOT NULL,
    field             text NOT NULL,
    rule              text NOT NULL,
    detail            text NOT NULL,
    raw               bytea,
    received_at       timestamptz NOT NULL
);

-- Fencing: the next offset to process per (group, topic, partition), and the
-- epoch of the consumer that owns it. A consumer takes a new epoch when it is
-- assigned the partition; every batch transaction updates this row only if
-- the epoch is still its own, so a consumer that lost the partition in a
-- rebalance cannot write after the new owner.
CREATE TABLE stage_offsets (
    group_id     text NOT NULL,
    topic        text NOT NULL,
    partition    integer NOT NULL,
    next_offset  bigint NOT NULL,
    epoch        bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);
