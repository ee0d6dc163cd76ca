"""The SQL of reconcile's account invariants: deposits, withdrawals, closed accounts, platform totals.

`paystream.reconcile` lists every invariant with its name and description;
the queries for money that enters and leaves through account requests live
here so that module stays readable. Each query returns the rows that break
its invariant, with the offending request, journal, account or currency first.

Amounts are compared with what funds recorded (`account_operations`) and what
settlement closed (`settlement_batches`), not with the journals themselves:
the ledger is checked against the records it answers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from paystream.ledger import funding_account, payout_clearing_account

RequestKind = Literal["deposit", "withdrawal"]


def _platform_account_sql(account_for: Callable[[str], str]) -> str:
    """The platform account of the operation `o`'s currency, as SQL: the id `paystream.ledger` names."""
    prefix = account_for("")
    assert prefix and "'" not in prefix, prefix
    return f"'{prefix}' || o.currency"


def request_journal_sql(kind: RequestKind) -> str:
    """Every succeeded operation of `kind` has exactly its one journal of that kind; every such journal has it.

    A deposit's journal is (funding -amount, account +amount); a withdrawal's is
    (account -amount, payout clearing +amount); both in the operation's
    currency, with exactly two entries. A journal of `kind` for a declined or
    unknown request has no succeeded operation and is reported by the second
    branch; so is a second journal for one request: it is not the journal its
    operation names. A withdrawal places no hold (funds debits the account in
    the transaction that decides it), so there is no open hold to look for.
    """
    if kind == "deposit":
        platform, platform_sign = _platform_account_sql(funding_account), -1
        legs_expected = "funding -amount, account +amount"
    else:
        platform, platform_sign = _platform_account_sql(payout_clearing_account), 1
        legs_expected = "account -amount, payout clearing +amount"
    legs = "string_agg(x.account_id || '=' || x.amount_minor || ' ' || x.currency, ', ' ORDER BY x.entry_id)"
    return f"""
        SELECT o.request_id, o.journal_id, o.account_id, o.amount_minor, o.currency,
               CASE WHEN j.journal_id IS NULL THEN 'no journal'
                    WHEN j.kind <> '{kind}' OR j.request_id IS DISTINCT FROM o.request_id
                         OR j.currency <> o.currency THEN 'journal of another kind, request or currency'
                    ELSE 'entries are not ({legs_expected})' END AS problem,
               e.legs
        FROM account_operations o
        LEFT JOIN journals j ON j.journal_id = o.journal_id
        LEFT JOIN LATERAL (
            SELECT count(*) AS n,
                   count(*) FILTER (WHERE x.currency = o.currency AND x.account_id = {platform}
                                      AND x.amount_minor = {platform_sign} * o.amount_minor) AS platform_legs,
                   count(*) FILTER (WHERE x.currency = o.currency AND x.account_id = o.account_id
                                      AND x.amount_minor = {-platform_sign} * o.amount_minor) AS account_legs,
                   {legs} AS legs
            FROM entries x WHERE x.journal_id = o.journal_id) e ON true
        WHERE o.kind = '{kind}' AND o.status = 'succeeded'
          AND (j.journal_id IS NULL OR j.kind <> '{kind}' OR j.request_id IS DISTINCT FROM o.request_id
               OR j.currency <> o.currency OR e.n <> 2 OR e.platform_legs <> 1 OR e.account_legs <> 1)
        UNION ALL
        SELECT j.request_id, j.journal_id, NULL, NULL, j.currency,
               'journal without its succeeded {kind}',
               (SELECT {legs} FROM entries x WHERE x.journal_id = j.journal_id)
        FROM journals j
        WHERE j.kind = '{kind}' AND NOT EXISTS (
            SELECT 1 FROM account_operations o
            WHERE o.kind = '{kind}' AND o.status = 'succeeded' AND o.journal_id = j.journal_id
              AND o.request_id = j.request_id)
        """


CLOSED_ACCOUNT_HOLDS_NOTHING_SQL = """
        SELECT a.account_id, a.balance_minor, a.held_minor, coalesce(h.n, 0) AS open_holds
        FROM accounts a
        LEFT JOIN (SELECT account_id, count(*) AS n FROM holds WHERE status = 'held' GROUP BY account_id) h
            USING (account_id)
        WHERE a.kind = 'customer' AND a.status = 'closed'
          AND (a.balance_minor <> 0 OR a.held_minor <> 0 OR coalesce(h.n, 0) > 0)
        """

# Deposits post funding -amount. Journals of kind `funding` (how accounts were
# funded before deposits existed) have no operation to compare with: their
# legs on the funding account count as they are, so the check stays exact on
# a ledger that has them. An entry outside any journal counts as not legacy.
FUNDING_MATCHES_DEPOSITS_SQL = """
        SELECT currency, coalesce(f.total, 0) AS funding_total, coalesce(d.deposited, 0) AS deposited,
               coalesce(f.legacy, 0) AS legacy_funding_journals
        FROM (SELECT a.currency, sum(e.amount_minor) AS total,
                     coalesce(sum(e.amount_minor) FILTER (WHERE j.kind = 'funding'), 0) AS legacy
              FROM accounts a JOIN entries e USING (account_id) LEFT JOIN journals j USING (journal_id)
              WHERE a.kind = 'funding' GROUP BY a.currency) f
        FULL JOIN (SELECT currency, sum(amount_minor) AS deposited FROM account_operations
                   WHERE kind = 'deposit' AND status = 'succeeded' GROUP BY currency) d USING (currency)
        WHERE coalesce(f.total, 0) <> coalesce(f.legacy, 0) - coalesce(d.deposited, 0)
        """

# Withdrawals post payout clearing +amount; a closed batch's payout journal
# posts its net (merchant pending -net, payout clearing +net), in the same
# transaction that closes the batch, and a batch of net 0 posts none
# (workers/settlement_close.py). So the account holds exactly the succeeded
# withdrawals plus the closed batches' net; closed_batch_totals checks each
# payout journal against its batch.
PAYOUTS_MATCH_WITHDRAWALS_AND_BATCHES_SQL = """
        SELECT currency, coalesce(p.total, 0) AS payout_clearing_total, coalesce(w.withdrawn, 0) AS withdrawn,
               coalesce(b.paid_out, 0) AS closed_batches_net
        FROM (SELECT a.currency, sum(e.amount_minor) AS total FROM accounts a JOIN entries e USING (account_id)
              WHERE a.kind = 'payout_clearing' GROUP BY a.currency) p
        FULL JOIN (SELECT currency, sum(amount_minor) AS withdrawn FROM account_operations
                   WHERE kind = 'withdrawal' AND status = 'succeeded' GROUP BY currency) w USING (currency)
        FULL JOIN (SELECT currency, sum(net_minor) AS paid_out FROM settlement_batches
                   WHERE status = 'closed' GROUP BY currency) b USING (currency)
        WHERE coalesce(p.total, 0) <> coalesce(w.withdrawn, 0) + coalesce(b.paid_out, 0)
        """
