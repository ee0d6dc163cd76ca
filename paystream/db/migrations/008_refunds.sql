-- Refunds (docs/design-decisions.md §16). A captured payment may be refunded
-- in part, several times, never beyond what was captured; each refund moves
-- the money in one balanced journal (payer +amount, merchant pending -net back,
-- platform fees -fee back) and is taken off the merchant's settlement: from
-- the batch holding the payment while it is open, else from the next batch,
-- as a negative item. A batch's net may then be negative (a debit to the
-- merchant: its payout journal runs the other way).

ALTER TABLE payments ADD COLUMN refunded_minor bigint NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0);
ALTER TABLE payments ADD CONSTRAINT refunded_within_captured
    CHECK (refunded_minor = 0 OR refunded_minor <= gross_minor);

ALTER TABLE account_requests DROP CONSTRAINT account_requests_kind_check;
ALTER TABLE account_requests ADD CONSTRAINT account_requests_kind_check CHECK (kind IN
    ('account.open', 'account.close', 'deposit', 'withdrawal', 'capture', 'void', 'refund'));
ALTER TABLE account_operations DROP CONSTRAINT account_operations_check;
ALTER TABLE account_operations ADD CONSTRAINT account_operations_journal_iff_money_moved CHECK (
    (status = 'succeeded' AND kind IN ('deposit', 'withdrawal', 'refund')) = (journal_id IS NOT NULL));

ALTER TABLE journals DROP CONSTRAINT journals_kind_check;
ALTER TABLE journals ADD CONSTRAINT journals_kind_check CHECK (kind IN
    ('funding', 'clearing', 'payout', 'correction', 'deposit', 'withdrawal', 'refund'));
DROP INDEX journals_one_per_account_request;
CREATE UNIQUE INDEX journals_one_per_account_request ON journals (kind, request_id)
    WHERE kind IN ('deposit', 'withdrawal', 'refund');

-- Funds' record of each refund that moved money (the split is fixed here).
CREATE TABLE refunds (
    refund_id        text PRIMARY KEY,
    payment_id       text NOT NULL REFERENCES payments (payment_id),
    account_id       text NOT NULL,
    merchant_id      text NOT NULL,
    currency         char(3) NOT NULL,
    amount_minor     bigint NOT NULL CHECK (amount_minor > 0),
    fee_back_minor   bigint NOT NULL CHECK (fee_back_minor >= 0),
    net_back_minor   bigint NOT NULL CHECK (net_back_minor >= 0),
    refunded_after_minor bigint NOT NULL,
    journal_id       text NOT NULL UNIQUE REFERENCES journals (journal_id),
    event_time       timestamptz NOT NULL,
    refunded_at      timestamptz NOT NULL,
    CHECK (amount_minor = fee_back_minor + net_back_minor)
);
CREATE INDEX refunds_payment_idx ON refunds (payment_id);

-- Settlement's negative items: one per refund.
CREATE TABLE settlement_refund_items (
    refund_id     text PRIMARY KEY,
    payment_id    text NOT NULL,
    batch_id      text NOT NULL REFERENCES settlement_batches (batch_id),
    merchant_id   text NOT NULL,
    currency      char(3) NOT NULL,
    gross_minor   bigint NOT NULL CHECK (gross_minor > 0),
    fee_minor     bigint NOT NULL CHECK (fee_minor >= 0),
    net_minor     bigint NOT NULL CHECK (net_minor >= 0),
    event_time    timestamptz NOT NULL,
    added_at      timestamptz NOT NULL
);
CREATE INDEX settlement_refund_items_batch_idx ON settlement_refund_items (batch_id);

-- A closed batch's totals are its payments' sums minus its refunds' sums.
ALTER TABLE settlement_batches ADD COLUMN refund_count integer;

CREATE OR REPLACE FUNCTION settlement_batch_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'settlement batches are never deleted';
    END IF;
    IF OLD.status = 'closed' AND (NEW.status, NEW.item_count, NEW.refund_count, NEW.gross_minor, NEW.fee_minor,
            NEW.net_minor, NEW.payout_journal_id, NEW.closed_at)
        IS DISTINCT FROM (OLD.status, OLD.item_count, OLD.refund_count, OLD.gross_minor, OLD.fee_minor,
            OLD.net_minor, OLD.payout_journal_id, OLD.closed_at) THEN
        RAISE EXCEPTION 'settlement batch % is closed and immutable', OLD.batch_id;
    END IF;
    RETURN NEW;
END $$;
