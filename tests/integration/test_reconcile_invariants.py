"""Six invariants of `paystream reconcile`, each broken on purpose, alone, on the real PostgreSQL.

A small real pipeline runs first (its own database); each test then breaks
exactly one invariant with direct SQL inside a transaction that is rolled back,
and checks that reconcile reports that invariant and no other, with the
offending row's id among its examples. Where the schema itself refuses the
corruption (a foreign key, a unique index, a CHECK), the test drops that
constraint first, in the same rolled-back transaction of the isolated database,
and says so: reconcile is the net for what happens when such a guard is gone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from paystream.db.pool import connect
from paystream.ledger import fee_revenue_account, funding_account, merchant_pending_account, payout_clearing_account
from paystream.prepare import drop_database
from paystream.reconcile import ReconcileReport, reconcile
from paystream.settings import Settings
from tests.support.pipeline import drain, fresh_environment, generate, publish, wait_terminal

pytestmark = pytest.mark.integration

Breakage = Callable[[Any], Awaitable[list[str]]]  # breaks the database, returns the offending ids


@pytest.fixture(scope="module")
async def settled() -> AsyncIterator[Settings]:
    settings = await fresh_environment("recinv")
    generated = generate(120, settings.namespace.rstrip("."), seed=21)
    await publish(settings, generated)
    await drain(settings)
    await wait_terminal(settings, [g.payment.payment_id for g in generated])
    yield settings
    await drop_database(settings)


async def _one(c: Any, sql: str, *args: Any) -> Any:
    row = await c.fetchrow(sql, *args)
    assert row is not None, f"the run has no row for the breakage: {sql}"
    return row


async def _journal(c: Any, journal_id: str, currency: str, legs: list[tuple[str, int]], **columns: Any) -> None:
    """A journal with its entries, written as paystream writes them (balanced unless the legs are not)."""
    await c.execute(
        "INSERT INTO journals (journal_id, kind, payment_id, batch_id, currency, created_at)"
        " VALUES ($1, $2, $3, $4, $5, now())",
        journal_id,
        columns.get("kind", "correction"),
        columns.get("payment_id"),
        columns.get("batch_id"),
        currency,
    )
    for account_id, amount in legs:
        await c.execute(
            "INSERT INTO entries (journal_id, account_id, currency, amount_minor, created_at)"
            " VALUES ($1, $2, $3, $4, now())",
            journal_id,
            account_id,
            currency,
            amount,
        )


# --- ledger_sums_to_zero_per_currency ------------------------------------------------------------


async def entry_outside_any_journal(c: Any) -> list[str]:
    # Every journal balances, so the ledger can only go off through an entry no journal holds:
    # the foreign key refuses that, so it is dropped here. journal_balances reads journals and
    # cannot see the entry; the fee account stays in credit, so no other check is involved.
    await c.execute("ALTER TABLE entries DROP CONSTRAINT entries_journal_id_fkey")
    await c.execute(
        "INSERT INTO entries (journal_id, account_id, currency, amount_minor, created_at)"
        " VALUES ('no-such-journal', $1, 'EUR', 5, now())",
        fee_revenue_account("EUR"),
    )
    return ["EUR"]


# --- available_not_negative ----------------------------------------------------------------------


async def merchant_account_overdrawn(c: Any) -> list[str]:
    # A balanced correction debiting a merchant's pending account by more than it holds (its
    # other leg credits the platform funding account, which no check bounds). No guard refuses it.
    row = await _one(
        c,
        """SELECT a.account_id, a.currency, coalesce(sum(e.amount_minor), 0) AS total
           FROM accounts a LEFT JOIN entries e USING (account_id)
           WHERE a.kind = 'merchant_pending' GROUP BY a.account_id, a.currency ORDER BY a.account_id LIMIT 1""",
    )
    overdraft = row["total"] + 1
    await _journal(
        c,
        "bad:overdraft",
        row["currency"],
        [(row["account_id"], -overdraft), (funding_account(row["currency"]), overdraft)],
    )
    return [row["account_id"]]


async def customer_available_negative(c: Any) -> list[str]:
    # The CHECK customer_available_not_negative refuses it: dropped here. An open hold larger
    # than the available balance, with held_minor raised to match (customer_held_matches_open_holds
    # stays true). The hold belongs to no payment, so the payment checks do not see it.
    account = await _one(
        c,
        "SELECT account_id, currency, balance_minor - held_minor AS available FROM accounts"
        " WHERE kind = 'customer' AND status = 'open' AND balance_minor > 0 ORDER BY account_id LIMIT 1",
    )
    amount = account["available"] + 1
    await c.execute("ALTER TABLE accounts DROP CONSTRAINT customer_available_not_negative")
    await c.execute(
        "INSERT INTO holds (payment_id, hold_id, account_id, amount_minor, currency, status, created_at, updated_at)"
        " VALUES ('no-such-payment', 'hold:no-such-payment', $1, $2, $3, 'held', now(), now())",
        account["account_id"],
        amount,
        account["currency"],
    )
    await c.execute(
        "UPDATE accounts SET held_minor = held_minor + $2 WHERE account_id = $1", account["account_id"], amount
    )
    return [account["account_id"]]


# --- one_effect_per_payment ----------------------------------------------------------------------


async def second_clearing_journal(c: Any) -> list[str]:
    # The unique index journals_one_clearing_per_payment refuses it: dropped here. The second
    # journal balances between platform accounts; the clearing record still points at the first.
    row = await _one(c, "SELECT payment_id, currency FROM clearings ORDER BY payment_id LIMIT 1")
    currency = row["currency"]
    await c.execute("DROP INDEX journals_one_clearing_per_payment")
    await _journal(
        c,
        f"bad:clearing-again:{row['payment_id']}",
        currency,
        [(funding_account(currency), -1), (fee_revenue_account(currency), 1)],
        kind="clearing",
        payment_id=row["payment_id"],
    )
    return [row["payment_id"]]


async def second_payout_journal(c: Any) -> list[str]:
    # The unique index journals_one_payout_per_batch refuses it: dropped here. The batch id is one
    # no settlement batch has: a real closed batch's doubled payout would break closed_batch_totals too.
    await c.execute("DROP INDEX journals_one_payout_per_batch")
    for n in (1, 2):
        await _journal(
            c,
            f"bad:payout-{n}",
            "EUR",
            [(funding_account("EUR"), -1), (payout_clearing_account("EUR"), 1)],
            kind="payout",
            batch_id="bad-batch",
        )
    return ["bad-batch"]


# --- clearing_matches_journal --------------------------------------------------------------------


async def clearing_names_another_payer(c: Any) -> list[str]:
    # The clearing record says another customer paid: its journal debits nobody by that name.
    # Nothing else reads the clearing's payer, and no guard refuses the update.
    row = await _one(
        c,
        """SELECT c.payment_id, a.account_id AS other FROM clearings c
           JOIN accounts a ON a.kind = 'customer' AND a.currency = c.currency AND a.account_id <> c.payer_account
           ORDER BY c.payment_id, a.account_id LIMIT 1""",
    )
    await c.execute("UPDATE clearings SET payer_account = $2 WHERE payment_id = $1", row["payment_id"], row["other"])
    return [row["payment_id"]]


# --- captured_hold_has_clearing ------------------------------------------------------------------


async def captured_hold_without_clearing(c: Any) -> list[str]:
    # A captured hold with no clearing, for a payment id paystream never saw: every payment that
    # exists has its hold checked against its status too, so only a ghost hold isolates this check.
    # A captured hold does not count in held_minor.
    row = await _one(c, "SELECT payer_account, currency FROM payments ORDER BY payment_id LIMIT 1")
    await c.execute(
        "INSERT INTO holds (payment_id, hold_id, account_id, amount_minor, currency, status, created_at, updated_at)"
        " VALUES ('ghost-captured', 'hold:ghost-captured', $1, 100, $2, 'captured', now(), now())",
        row["payer_account"],
        row["currency"],
    )
    return ["ghost-captured"]


async def _ghost_clearing(c: Any, payment_id: str) -> None:
    """A clearing, with a journal that matches it, for a payment with no payments row (which the status
    checks would read). Its payer leg debits the funding account, not a customer, so no customer
    balance moves. No guard refuses it."""
    currency = "EUR"
    merchant = (
        await _one(
            c,
            "SELECT owner_id FROM accounts WHERE kind = 'merchant_pending' AND currency = $1 ORDER BY owner_id LIMIT 1",
            currency,
        )
    )["owner_id"]
    payer, gross, fee = funding_account(currency), 1_000, 30
    journal_id = f"bad:clearing:{payment_id}"
    await _journal(
        c,
        journal_id,
        currency,
        [
            (payer, -gross),
            (merchant_pending_account(merchant, currency), gross - fee),
            (fee_revenue_account(currency), fee),
        ],
        kind="clearing",
        payment_id=payment_id,
    )
    await c.execute(
        """INSERT INTO clearings (payment_id, journal_id, payer_account, merchant_id, currency, gross_minor, fee_minor,
                                  net_minor, event_time, cleared_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now(), now())""",
        payment_id,
        journal_id,
        payer,
        merchant,
        currency,
        gross,
        fee,
        gross - fee,
    )


async def clearing_with_released_hold(c: Any) -> list[str]:
    # The hold was released, yet a clearing exists. A released hold is not in held_minor.
    await c.execute(
        "INSERT INTO holds (payment_id, hold_id, account_id, amount_minor, currency, status, created_at, updated_at)"
        " VALUES ('ghost-released', 'hold:ghost-released', 'payer-000002', 1000, 'EUR', 'released', now(), now())"
    )
    await _ghost_clearing(c, "ghost-released")
    return ["ghost-released"]


async def clearing_without_any_hold(c: Any) -> list[str]:
    await _ghost_clearing(c, "ghost-unheld")
    return ["ghost-unheld"]


# --- items_match_clearings -----------------------------------------------------------------------


async def item_names_another_merchant(c: Any) -> list[str]:
    # Batch totals add amounts, not merchants: only the comparison with clearing sees it.
    row = await _one(c, "SELECT payment_id FROM settlement_items ORDER BY payment_id LIMIT 1")
    payment_id = row["payment_id"]
    await c.execute("UPDATE settlement_items SET merchant_id = 'merchant-elsewhere' WHERE payment_id = $1", payment_id)
    return [payment_id]


async def amounts_moved_between_items(c: Any) -> list[str]:
    # One unit of fee moved from one item to another of the same closed batch (and net the other way):
    # the batch's sums do not change, so closed_batch_totals holds; both items now disagree with clearing.
    row = await _one(
        c,
        """SELECT min(i.payment_id) AS first, max(i.payment_id) AS second FROM settlement_items i
           JOIN settlement_batches b USING (batch_id)
           WHERE b.status = 'closed' AND i.fee_minor > 0 AND i.net_minor > 0
           GROUP BY i.batch_id HAVING count(*) >= 2 ORDER BY i.batch_id LIMIT 1""",
    )
    await c.execute(
        "UPDATE settlement_items SET fee_minor = fee_minor + 1, net_minor = net_minor - 1 WHERE payment_id = $1",
        row["first"],
    )
    await c.execute(
        "UPDATE settlement_items SET fee_minor = fee_minor - 1, net_minor = net_minor + 1 WHERE payment_id = $1",
        row["second"],
    )
    return [row["first"], row["second"]]


async def item_without_clearing(c: Any) -> list[str]:
    # An item for a payment clearing never recorded (risk rejected it), in a batch still open (a
    # closed batch's totals would disagree too). No guard refuses either row.
    row = await _one(c, "SELECT payment_id FROM payments WHERE status = 'rejected' ORDER BY payment_id LIMIT 1")
    await c.execute(
        """INSERT INTO settlement_batches (batch_id, merchant_id, currency, cycle_start, cycle_end, cutoff_at, status,
                                           opened_at)
           VALUES ('bad:open-batch', 'merchant-001', 'EUR', now(), now(), now(), 'open', now())"""
    )
    await c.execute(
        """INSERT INTO settlement_items (payment_id, batch_id, merchant_id, currency, gross_minor, fee_minor, net_minor,
                                         event_time, added_at)
           VALUES ($1, 'bad:open-batch', 'merchant-001', 'EUR', 1000, 30, 970, now(), now())""",
        row["payment_id"],
    )
    return [row["payment_id"]]


async def rejected_payment_with_a_hold(c: Any) -> list[str]:
    # An open hold (and the payer's held amount to match it) for a payment risk rejected:
    # only the payment's own timeline can tell that funds should never have seen it.
    row = await _one(
        c,
        """SELECT p.payment_id, p.payer_account, p.currency FROM payments p
           JOIN accounts a ON a.account_id = p.payer_account
           WHERE p.status = 'rejected' AND a.balance_minor - a.held_minor >= 1 LIMIT 1""",
    )
    await c.execute(
        """INSERT INTO holds (payment_id, hold_id, account_id, amount_minor, currency, status, created_at, updated_at)
           VALUES ($1, 'hold:' || $1, $2, 1, $3, 'held', now(), now())""",
        row["payment_id"],
        row["payer_account"],
        row["currency"].strip(),
    )
    await c.execute("UPDATE accounts SET held_minor = held_minor + 1 WHERE account_id = $1", row["payer_account"])
    return [row["payment_id"]]


async def item_without_a_payment(c: Any) -> list[str]:
    # A settlement item whose payment row is gone: every other check starts from the payment.
    row = await _one(c, "SELECT payment_id FROM settlement_items LIMIT 1")
    await c.execute("DELETE FROM payments WHERE payment_id = $1", row["payment_id"])
    return [row["payment_id"]]


BREAKAGES: dict[str, tuple[Breakage, str]] = {
    "rejected payment with a hold": (rejected_payment_with_a_hold, "payment_status_matches_stage_records"),
    "item without a payment": (item_without_a_payment, "settled_once_and_none_missing"),
    "entry outside any journal": (entry_outside_any_journal, "ledger_sums_to_zero_per_currency"),
    "merchant account overdrawn": (merchant_account_overdrawn, "available_not_negative"),
    "customer available negative": (customer_available_negative, "available_not_negative"),
    "second clearing journal": (second_clearing_journal, "one_effect_per_payment"),
    "second payout journal": (second_payout_journal, "one_effect_per_payment"),
    "clearing names another payer": (clearing_names_another_payer, "clearing_matches_journal"),
    "captured hold without clearing": (captured_hold_without_clearing, "captured_hold_has_clearing"),
    "clearing with a released hold": (clearing_with_released_hold, "captured_hold_has_clearing"),
    "item names another merchant": (item_names_another_merchant, "items_match_clearings"),
    "amounts moved between items": (amounts_moved_between_items, "items_match_clearings"),
    "item without clearing": (item_without_clearing, "items_match_clearings"),
}


async def _reconcile_after(settings: Settings, action: Breakage) -> tuple[ReconcileReport, list[str]]:
    """Reconcile before and after `action`, in one transaction that is rolled back."""
    connection = await connect(settings)
    try:
        transaction = connection.transaction()
        await transaction.start()
        try:
            before = await reconcile(connection, own_snapshot=False)
            assert before.failures() == [], "the run itself must reconcile before anything is broken"
            offending = await action(connection)
            return await reconcile(connection, own_snapshot=False), offending
        finally:
            await transaction.rollback()
    finally:
        await connection.close()


@pytest.mark.parametrize("breakage", list(BREAKAGES))
async def test_breaking_one_invariant_is_reported_as_that_invariant(settled: Settings, breakage: str) -> None:
    action, invariant = BREAKAGES[breakage]
    report, offending = await _reconcile_after(settled, action)
    failed = {v.invariant: v for v in report.failures()}
    assert set(failed) == {invariant}, [str(v) for v in report.failures()]
    examples = failed[invariant].examples
    for offending_id in offending:
        assert any(offending_id in row.values() for row in examples), (offending_id, examples)


async def test_a_clearing_without_any_hold_is_reported(settled: Settings) -> None:
    report, (payment_id,) = await _reconcile_after(settled, clearing_without_any_hold)
    failed = {v.invariant: v for v in report.failures()}
    assert set(failed) == {"captured_hold_has_clearing"}, [str(v) for v in report.failures()]
    assert any(payment_id in row.values() for row in failed["captured_hold_has_clearing"].examples)


async def test_a_clearing_journal_with_extra_entries_is_one_effect_too_many(settled: Settings) -> None:
    """The third branch of one_effect_per_payment cannot break alone: any extra credit leg is also a
    clearing that no longer matches its journal. Both are reported, with the journal's id."""

    async def extra_entries(c: Any) -> list[str]:
        row = await _one(c, "SELECT journal_id, currency FROM clearings ORDER BY payment_id LIMIT 1")
        for account_id, amount in ((funding_account(row["currency"]), -1), (fee_revenue_account(row["currency"]), 1)):
            await c.execute(
                "INSERT INTO entries (journal_id, account_id, currency, amount_minor, created_at)"
                " VALUES ($1, $2, $3, $4, now())",
                row["journal_id"],
                account_id,
                row["currency"],
                amount,
            )
        return [row["journal_id"]]

    report, (journal_id,) = await _reconcile_after(settled, extra_entries)
    failed = {v.invariant: v for v in report.failures()}
    assert set(failed) == {"one_effect_per_payment", "clearing_matches_journal"}, [str(v) for v in failed.values()]
    assert {"effect": "clearing entries", "id": journal_id, "n": 5} in failed["one_effect_per_payment"].examples
