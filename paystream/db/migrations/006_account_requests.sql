-- Accounts are opened, funded, paid out and closed by upstream events on the
-- payer-keyed request topic (docs/design-decisions.md §13). Risk stores each
-- request with its decision (the idempotency record, like risk_decisions for
-- payments); funds applies the approved ones to the account and records the
-- result, with the journal that moved the money.

CREATE TABLE account_requests (
    kind         text NOT NULL CHECK (kind IN ('account.open', 'account.close', 'deposit', 'withdrawal')),
    request_id   text NOT NULL,
    account_id   text NOT NULL,
    created_at   timestamptz NOT NULL,
    decision     text NOT NULL CHECK (decision IN ('approved', 'rejected')),
    reasons      text[] NOT NULL,
    assessed_at  timestamptz NOT NULL,
    request      jsonb NOT NULL,
    PRIMARY KEY (kind, request_id)
);
CREATE INDEX account_requests_account_idx ON account_requests (account_id);

CREATE TABLE account_operations (
    kind          text NOT NULL,
    request_id    text NOT NULL,
    account_id    text NOT NULL,
    status        text NOT NULL CHECK (status IN ('succeeded', 'declined')),
    reasons       text[] NOT NULL DEFAULT '{}',
    amount_minor  bigint CHECK (amount_minor > 0),
    currency      char(3),
    journal_id    text,
    decided_at    timestamptz NOT NULL,
    PRIMARY KEY (kind, request_id),
    FOREIGN KEY (kind, request_id) REFERENCES account_requests (kind, request_id),
    -- Money moves only with a journal, and only deposits and withdrawals move money.
    CHECK ((status = 'succeeded' AND kind IN ('deposit', 'withdrawal')) = (journal_id IS NOT NULL))
);
CREATE INDEX account_operations_account_idx ON account_operations (account_id);

-- Deposits and withdrawals post their own journal kinds, one per request.
ALTER TABLE journals DROP CONSTRAINT journals_kind_check;
ALTER TABLE journals ADD CONSTRAINT journals_kind_check CHECK (kind IN
    ('funding', 'clearing', 'payout', 'correction', 'deposit', 'withdrawal'));
ALTER TABLE journals ADD COLUMN request_id text;
CREATE UNIQUE INDEX journals_one_per_account_request ON journals (kind, request_id)
    WHERE kind IN ('deposit', 'withdrawal');
