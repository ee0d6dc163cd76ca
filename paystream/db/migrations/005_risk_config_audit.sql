-- Every change of the risk configuration (risk_limits, risk_blocklist), who
-- made it and what it was before and after; written by paystream/risk_config.py
-- in the same transaction as the change itself, so a change without its audit
-- row cannot commit. Append-only: an audit that can be edited proves nothing.
--
-- action   limits.set (subject: the currency, 'USD'), block or unblock
--          (subject: kind:value, 'payer:payer-000001'; ids may contain ':',
--          the kind is what comes before the first one).
-- old_value/new_value  the whole configuration row as JSON, without its key:
--          limits {txn_amount_max_minor: ..., ...}, blocklist {reason: ...};
--          NULL when the row did not exist before (created) or after (unblock).
-- changed_at  the changing transaction's start time (now()).
-- change_id  orders changes; changes of one subject hold its row lock while
--          they take their id, so their ids follow their commit order.
CREATE TABLE risk_config_audit (
    change_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action      text NOT NULL CHECK (action IN ('limits.set', 'block', 'unblock')),
    subject     text NOT NULL CHECK (length(subject) BETWEEN 1 AND 100),
    old_value   jsonb,
    new_value   jsonb,
    changed_at  timestamptz NOT NULL DEFAULT now(),
    operator    text NOT NULL CHECK (length(operator) BETWEEN 1 AND 64),
    -- A no-op is not a change: it is not recorded (docs/risk.md).
    CHECK (old_value IS DISTINCT FROM new_value)
);
CREATE INDEX risk_config_audit_subject_idx ON risk_config_audit (subject, change_id);

CREATE TRIGGER risk_config_audit_append_only BEFORE UPDATE OR DELETE ON risk_config_audit
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
-- Row triggers do not fire on TRUNCATE: refuse it as a statement.
CREATE TRIGGER risk_config_audit_no_truncate BEFORE TRUNCATE ON risk_config_audit
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
