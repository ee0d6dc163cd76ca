-- Manual capture (docs/design-decisions.md §14). A payment may ask for manual
-- capture: its hold then waits, `authorized`, for a capture request (all of
-- it or less: the rest is released) or a void (all released), and expires at
-- its deadline. Every hold records what it captured and what it released, so
-- captured + released = held once it has ended.

ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check CHECK (status IN
    ('approved', 'rejected', 'held', 'authorized', 'declined', 'failed', 'voided', 'expired', 'cleared', 'settled'));
ALTER TABLE payments ADD COLUMN capture_mode text NOT NULL DEFAULT 'automatic'
    CHECK (capture_mode IN ('automatic', 'manual'));
ALTER TABLE payments ADD COLUMN ended_at timestamptz;  -- voided or expired

-- held: open (automatic: clearing captures it; manual: waiting); capturing:
-- funds accepted a manual capture of `capture_minor`, clearing captures it;
-- captured; released (the payment failed); voided; expired; declined.
ALTER TABLE holds DROP CONSTRAINT holds_status_check;
ALTER TABLE holds ADD CONSTRAINT holds_status_check CHECK (status IN
    ('held', 'capturing', 'captured', 'released', 'voided', 'expired', 'declined'));
ALTER TABLE holds ADD COLUMN expires_at timestamptz;          -- manual capture only
ALTER TABLE holds ADD COLUMN capture_minor bigint CHECK (capture_minor > 0 AND capture_minor <= amount_minor);
ALTER TABLE holds ADD COLUMN captured_minor bigint NOT NULL DEFAULT 0 CHECK (captured_minor >= 0);
ALTER TABLE holds ADD COLUMN released_minor bigint NOT NULL DEFAULT 0 CHECK (released_minor >= 0);
-- Outbox mark of an expiry's outcome: produced and acknowledged.
ALTER TABLE holds ADD COLUMN expiry_published_at timestamptz;
-- Holds already ended before this migration: what they captured or released.
UPDATE holds SET captured_minor = amount_minor WHERE status = 'captured';
UPDATE holds SET released_minor = amount_minor WHERE status = 'released';
ALTER TABLE holds ADD CONSTRAINT hold_ends_whole CHECK (
    status NOT IN ('captured', 'released', 'voided', 'expired') OR captured_minor + released_minor = amount_minor);

CREATE INDEX holds_expiry_idx ON holds (expires_at) WHERE status = 'held' AND expires_at IS NOT NULL;
CREATE INDEX holds_expiry_unpublished_idx ON holds (updated_at)
    WHERE status = 'expired' AND expiry_published_at IS NULL;

ALTER TABLE account_requests DROP CONSTRAINT account_requests_kind_check;
ALTER TABLE account_requests ADD CONSTRAINT account_requests_kind_check CHECK (kind IN
    ('account.open', 'account.close', 'deposit', 'withdrawal', 'capture', 'void'));
ALTER TABLE account_operations ADD COLUMN payment_id text;
