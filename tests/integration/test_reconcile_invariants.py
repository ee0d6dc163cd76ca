"""The invariants of `paystream reconcile`, each broken on purpose, alone, on the real PostgreSQL.

A small real pipeline runs first (its own database): account requests (opens, deposits, withdrawals, a
close, declines) and payments through every stage. Each test then breaks
exactly one invariant with direct SQL inside a transaction that is rolled back,
and checks that reconcile reports that invariant and no other, with the
offending row's id among its examples. Where the schema itself refuses the
corruption (a foreign key, a unique index, a CHECK), the test drops that
constraint first, in the same rolled-back transaction of the isolated database,
and says so: reconcile is the net for what happens when such a guard is gone.

A breakage that needs a balanced counter-leg takes it where no invariant bounds it: fee revenue and a
merchant's pending account are only bounded below (`available_not_negative`), so a credit to either, or
a debit that leaves it in credit, touches no other check. The funding and payout-clearing accounts are
no longer such places: their totals are checked against deposits, withdrawals and closed batches.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from paystream.db.pool import connect
from paystream.ledger import fee_revenue_account, funding_account, merchant_pending_account, payout_clearing_account
from paystream.prepare import drop_database
from paystream.publisher import PaymentPublisher
from paystream.reconcile import ReconcileReport, reconcile
from paystream.settings import Settings
from schemas.accounts import (
    AccountCloseRequested,
    AccountOpenRequested,
    AccountRequest,
    CaptureRequested,
    DepositRequested,
    VoidRequested,
    WithdrawalRequested,
)
from schemas.money import CurrencyCode
from schemas.payments import PaymentRequested
from schemas.refunds import RefundRequested
from tests.support.pipeline import drain, fresh_environment, generate, publish, wait_terminal

pytestmark = pytest.mark.integration

Breakage = Callable[[Any], Awaitable[list[str]]]  # breaks the database, returns the offending ids


# Account traffic next to the payments: A is funded, pays out and is refused a payout too large;
# B is funded, paid out to zero and closed (a closed account that held money); C only receives a
# deposit; two demo payers get a deposit and a withdrawal; a deposit to nobody is declined.
ACCOUNT_A, ACCOUNT_B, ACCOUNT_C = "acct-a", "acct-b", "acct-c"
EXPECTED_OPERATIONS = {
    ("account.open", "open-a"): "succeeded",
    ("deposit", "dep-a"): "succeeded",
    ("withdrawal", "wd-a"): "succeeded",
    ("withdrawal", "wd-a-too-much"): "declined",
    ("account.open", "open-b"): "succeeded",
    ("deposit", "dep-b"): "succeeded",
    ("withdrawal", "wd-b"): "succeeded",
    ("account.close", "close-b"): "succeeded",
    ("account.open", "open-c"): "succeeded",
    ("deposit", "dep-c"): "succeeded",
    ("deposit", "dep-p5"): "succeeded",
    ("withdrawal", "wd-p6"): "succeeded",
    ("deposit", "dep-nobody"): "declined",
    ("refund", "rf-rec-part"): "succeeded",
    ("refund", "rf-rec-full"): "succeeded",
    ("capture", "cap-rec-1"): "succeeded",
    ("void", "void-rec-2"): "succeeded",
}
LIFECYCLE_PAYER = "payer-000000"  # open and rich in EUR; merchant-000 takes EUR


async def _settled_payments(settings: Settings, count: int) -> list[tuple[str, str, int, str]]:
    connection = await connect(settings)
    try:
        rows = await connection.fetch(
            """SELECT payment_id, payer_account, gross_minor, currency FROM payments
               WHERE status = 'settled' AND gross_minor > 1 ORDER BY payment_id LIMIT $1""",
            count,
        )
    finally:
        await connection.close()
    assert len(rows) == count
    return [(r["payment_id"], r["payer_account"], r["gross_minor"], r["currency"].strip()) for r in rows]


def lifecycle_requests(settled: list[tuple[str, str, int, str]]) -> list[Any]:
    now = datetime.now(UTC)
    (part_id, part_payer, part_gross, part_currency), (full_id, full_payer, full_gross, full_currency) = settled
    manual = [
        PaymentRequested(payment_id=f"mc-rec-{n}", payer_account=LIFECYCLE_PAYER, merchant_id="merchant-000",
                         amount_minor=1_000, currency="EUR", country="DE", method="card", created_at=now,
                         capture="manual")
        for n in (1, 2)
    ]  # fmt: skip
    return [
        RefundRequested(request_id="rf-rec-part", account_id=part_payer, payment_id=part_id,
                        amount_minor=part_gross // 2, currency=part_currency, reason="half", created_at=now),
        RefundRequested(request_id="rf-rec-full", account_id=full_payer, payment_id=full_id,
                        amount_minor=full_gross, currency=full_currency, reason="all", created_at=now),
        *manual,
    ]  # fmt: skip


def capture_requests() -> list[AccountRequest]:
    now = datetime.now(UTC)
    return [
        CaptureRequested(request_id="cap-rec-1", account_id=LIFECYCLE_PAYER, payment_id="mc-rec-1",
                         amount_minor=600, currency="EUR", created_at=now),
        VoidRequested(request_id="void-rec-2", account_id=LIFECYCLE_PAYER, payment_id="mc-rec-2", created_at=now),
    ]  # fmt: skip


def account_requests() -> list[AccountRequest]:
    now = datetime.now(UTC)

    def deposit(request_id: str, account_id: str, amount: int, currency: CurrencyCode) -> DepositRequested:
        return DepositRequested(
            request_id=request_id,
            account_id=account_id,
            amount_minor=amount,
            currency=currency,
            source_ref=f"SEPA {request_id}",
            created_at=now,
        )

    def withdrawal(request_id: str, account_id: str, amount: int, currency: CurrencyCode) -> WithdrawalRequested:
        return WithdrawalRequested(
            request_id=request_id,
            account_id=account_id,
            amount_minor=amount,
            currency=currency,
            destination_ref=f"IBAN {request_id}",
            created_at=now,
        )

    def open_account(request_id: str, account_id: str, currency: CurrencyCode) -> AccountOpenRequested:
        return AccountOpenRequested(
            request_id=request_id, account_id=account_id, owner_id=account_id, currency=currency, created_at=now
        )

    return [
        open_account("open-a", ACCOUNT_A, "EUR"),
        deposit("dep-a", ACCOUNT_A, 50_000, "EUR"),
        withdrawal("wd-a", ACCOUNT_A, 20_000, "EUR"),
        withdrawal("wd-a-too-much", ACCOUNT_A, 40_000, "EUR"),  # 30,000 available: declined
        open_account("open-b", ACCOUNT_B, "USD"),
        deposit("dep-b", ACCOUNT_B, 3_000, "USD"),
        withdrawal("wd-b", ACCOUNT_B, 3_000, "USD"),
        AccountCloseRequested(request_id="close-b", account_id=ACCOUNT_B, created_at=now),
        open_account("open-c", ACCOUNT_C, "EUR"),
        deposit("dep-c", ACCOUNT_C, 7_000, "EUR"),
        deposit("dep-p5", "payer-000005", 1_000, "USD"),
        withdrawal("wd-p6", "payer-000006", 500, "GBP"),
        deposit("dep-nobody", "acct-nobody", 100, "EUR"),
    ]


@pytest.fixture(scope="module")
async def settled() -> AsyncIterator[Settings]:
    settings = await fresh_environment("recinv")
    generated = generate(120, settings.namespace.rstrip("."), seed=21)
    async with PaymentPublisher(settings, client_id="paystream-tests") as publisher:
        for request in account_requests():
            await publisher.publish_account_request(request)
    await publish(settings, generated)
    await drain(settings)
    await wait_terminal(settings, [g.payment.payment_id for g in generated])
    # Then the lifecycle: two settled payments refunded (one in part, one in full), a manual capture
    # taken in part, another voided; drained until settlement has taken the refunds off its batches.
    settled_ids = await _settled_payments(settings, 2)
    async with PaymentPublisher(settings, client_id="paystream-tests") as publisher:
        for request in lifecycle_requests(settled_ids):
            if isinstance(request, PaymentRequested):
                await publisher.publish(request)
            else:
                await publisher.publish_account_request(request)
    await drain(settings)
    async with PaymentPublisher(settings, client_id="paystream-tests") as publisher:
        for request in capture_requests():
            await publisher.publish_account_request(request)
    await drain(settings)
    await wait_terminal(settings, [g.payment.payment_id for g in generated] + ["mc-rec-1"])
    connection = await connect(settings)
    try:
        rows = await connection.fetch(
            "SELECT kind, request_id, status FROM account_operations WHERE request_id = ANY($1::text[])",
            [request_id for _, request_id in EXPECTED_OPERATIONS],
        )
    finally:
        await connection.close()
    # The breakages below rely on this traffic having been applied as written.
    assert {(r["kind"], r["request_id"]): r["status"] for r in rows} == EXPECTED_OPERATIONS
    yield settings
    await drop_database(settings)


async def _one(c: Any, sql: str, *args: Any) -> Any:
    row = await c.fetchrow(sql, *args)
    assert row is not None, f"the run has no row for the breakage: {sql}"
    return row


async def _journal(c: Any, journal_id: str, currency: str, legs: list[tuple[str, int]], **columns: Any) -> None:
    """A journal with its entries, written as paystream writes them (balanced unless the legs are not)."""
    await c.execute(
        "INSERT INTO journals (journal_id, kind, payment_id, batch_id, currency, created_at, request_id)"
        " VALUES ($1, $2, $3, $4, $5, now(), $6)",
        journal_id,
        columns.get("kind", "correction"),
        columns.get("payment_id"),
        columns.get("batch_id"),
        currency,
        columns.get("request_id"),
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


async def _fee_to_merchant(c: Any, currency: str, amount: int) -> list[tuple[str, int]]:
    """Legs moving `amount` out of fee revenue and back into it: a journal that changes no balance, so only
    the checks that read journals themselves can see it. (Merchant pending accounts are bound exactly by
    their open settlement since refunds, so they can no longer take a stray leg unseen.)"""
    fees = await c.fetchval(
        "SELECT coalesce(sum(amount_minor), 0) FROM entries WHERE account_id = $1", fee_revenue_account(currency)
    )
    assert fees >= amount, f"the run collected {fees} in {currency} fees, the breakage needs {amount}"
    return [(fee_revenue_account(currency), -amount), (fee_revenue_account(currency), amount)]


async def _set_balance(c: Any, account_id: str, delta: int) -> None:
    """Keep a customer's balance equal to its entries after a breakage posted `delta` to it."""
    await c.execute("UPDATE accounts SET balance_minor = balance_minor + $2 WHERE account_id = $1", account_id, delta)


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
    # A balanced correction debiting a merchant's pending account by more than it holds (its other leg
    # credits the platform's fee revenue, which no check bounds from above). No guard refuses it; the
    # account no longer holds what its open settlement says (it may be below zero after refunds).
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
        [(row["account_id"], -overdraft), (fee_revenue_account(row["currency"]), overdraft)],
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
    # journal moves a unit from fee revenue to a merchant; the clearing record still points at the first.
    row = await _one(c, "SELECT payment_id, currency FROM clearings ORDER BY payment_id LIMIT 1")
    currency = row["currency"]
    await c.execute("DROP INDEX journals_one_clearing_per_payment")
    await _journal(
        c,
        f"bad:clearing-again:{row['payment_id']}",
        currency,
        await _fee_to_merchant(c, currency, 1),
        kind="clearing",
        payment_id=row["payment_id"],
    )
    return [row["payment_id"]]


async def second_payout_journal(c: Any) -> list[str]:
    # The unique index journals_one_payout_per_batch refuses it: dropped here. The batch id is one
    # no settlement batch has: a real closed batch's doubled payout would break closed_batch_totals too.
    # The journals move a unit from fee revenue to a merchant each: a payout that credited the
    # payout-clearing account would also break payout_clearing_matches_payouts.
    await c.execute("DROP INDEX journals_one_payout_per_batch")
    for n in (1, 2):
        await _journal(
            c,
            f"bad:payout-{n}",
            "EUR",
            await _fee_to_merchant(c, "EUR", 1),
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
        "INSERT INTO holds (payment_id, hold_id, account_id, amount_minor, currency, status, captured_minor,"
        " created_at, updated_at)"
        " VALUES ('ghost-captured', 'hold:ghost-captured', $1, 100, $2, 'captured', 100, now(), now())",
        row["payer_account"],
        row["currency"],
    )
    return ["ghost-captured"]


async def _ghost_clearing(c: Any, payment_id: str) -> None:
    """A clearing, with a journal that matches it, for a payment with no payments row (which the status
    checks would read). Its payer is an open customer that can afford it, whose balance is lowered to
    match its entries. No guard refuses it."""
    currency = "EUR"
    merchant = (
        await _one(
            c,
            "SELECT owner_id FROM accounts WHERE kind = 'merchant_pending' AND currency = $1 ORDER BY owner_id LIMIT 1",
            currency,
        )
    )["owner_id"]
    gross, fee = 1_000, 30
    payer = (
        await _one(
            c,
            "SELECT account_id FROM accounts WHERE kind = 'customer' AND status = 'open' AND currency = $1"
            " AND balance_minor - held_minor >= $2 ORDER BY account_id LIMIT 1",
            currency,
            gross,
        )
    )["account_id"]
    await _set_balance(c, payer, -gross)
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
        "INSERT INTO holds (payment_id, hold_id, account_id, amount_minor, currency, status, released_minor,"
        " created_at, updated_at)"
        " VALUES ('ghost-released', 'hold:ghost-released', 'payer-000002', 1000, 'EUR', 'released', 1000, now(), now())"
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


# --- closed_account_holds_nothing ----------------------------------------------------------------


async def closed_account_funded_by_hand(c: Any) -> list[str]:
    # B was paid out to zero and closed through the pipeline. A hand-written legacy `funding` journal
    # credits it (its balance raised to match the entries): funding_matches_deposits counts funding
    # journals as they are, and no other check asks whether the account is open.
    await _journal(c, "bad:fund-closed", "USD", [(funding_account("USD"), -500), (ACCOUNT_B, 500)], kind="funding")
    await _set_balance(c, ACCOUNT_B, 500)
    return [ACCOUNT_B]


# --- deposit_has_its_journal ---------------------------------------------------------------------


async def deposit_recorded_for_another_account(c: Any) -> list[str]:
    # Funds' record says A received C's deposit; the journal credits C. The platform totals read only
    # the amount and currency, and nothing else reads the operation's account. No guard refuses it.
    await c.execute(
        "UPDATE account_operations SET account_id = $1 WHERE kind = 'deposit' AND request_id = 'dep-c'", ACCOUNT_A
    )
    return ["dep-c"]


async def second_deposit_journal(c: Any) -> list[str]:
    # The unique index journals_one_per_account_request refuses it: dropped here. A second `deposit`
    # journal for C's deposit, which its operation does not name; its legs move a unit from fee
    # revenue to a merchant, so the funding total and every balance stay as they were.
    await c.execute("DROP INDEX journals_one_per_account_request")
    await _journal(
        c, "bad:deposit-again", "EUR", await _fee_to_merchant(c, "EUR", 1), kind="deposit", request_id="dep-c"
    )
    return ["bad:deposit-again"]


# --- withdrawal_has_its_journal ------------------------------------------------------------------


async def second_withdrawal_journal(c: Any) -> list[str]:
    # As above for A's withdrawal: a second `withdrawal` journal its operation does not name, whose
    # legs leave the payout-clearing account and every balance as they were.
    await c.execute("DROP INDEX journals_one_per_account_request")
    await _journal(
        c, "bad:withdrawal-again", "EUR", await _fee_to_merchant(c, "EUR", 1), kind="withdrawal", request_id="wd-a"
    )
    return ["bad:withdrawal-again"]


async def withdrawal_recorded_for_another_account(c: Any) -> list[str]:
    # B's withdrawal re-recorded as C's: same amount and currency, so only the journal comparison sees it.
    await c.execute(
        "UPDATE account_operations SET account_id = $1 WHERE kind = 'withdrawal' AND request_id = 'wd-b'", ACCOUNT_C
    )
    return ["wd-b"]


# --- funding_matches_deposits --------------------------------------------------------------------


async def money_from_funding_without_a_deposit(c: Any) -> list[str]:
    # A correction takes money from outside (the funding account) with no deposit behind it, into fee
    # revenue. Every journal still balances; only the funding total no longer matches the deposits.
    await _journal(c, "bad:unfunded", "EUR", [(funding_account("EUR"), -250), (fee_revenue_account("EUR"), 250)])
    return ["EUR"]


# --- payout_clearing_matches_payouts -------------------------------------------------------------


async def money_taken_from_payout_clearing(c: Any) -> list[str]:
    # A correction moves a unit out of payout clearing (which stays in credit) into fee revenue: the
    # account no longer holds what withdrawals and closed batches paid out.
    held = await c.fetchval(
        "SELECT coalesce(sum(amount_minor), 0) FROM entries WHERE account_id = $1", payout_clearing_account("EUR")
    )
    assert held >= 1, "the run paid nothing out in EUR"
    await _journal(c, "bad:unpaid", "EUR", [(payout_clearing_account("EUR"), -1), (fee_revenue_account("EUR"), 1)])
    return ["EUR"]


# --- manual capture: holds end on time, whole, and capture what clearing says -------------------


async def hold_left_open_past_its_deadline(c: Any) -> list[str]:
    # A manual-capture hold nobody expired, two days past its deadline (with the payer's held amount to
    # match). It belongs to no payment row, so only the hold checks can see it.
    row = await _one(
        c,
        """SELECT account_id, currency FROM accounts
           WHERE kind = 'customer' AND status = 'open' AND balance_minor - held_minor >= 1 LIMIT 1""",
    )
    await c.execute(
        """INSERT INTO holds (payment_id, hold_id, account_id, amount_minor, currency, status, created_at, updated_at,
                              expires_at)
           VALUES ('ghost-authorized', 'hold:ghost-authorized', $1, 1, $2, 'held', now() - interval '9 days',
                   now() - interval '9 days', now() - interval '2 days')""",
        row["account_id"],
        row["currency"].strip(),
    )
    await c.execute("UPDATE accounts SET held_minor = held_minor + 1 WHERE account_id = $1", row["account_id"])
    return ["ghost-authorized"]


async def declined_hold_releasing_money(c: Any) -> list[str]:
    # A declined hold never held anything, so it can release nothing.
    row = await _one(c, "SELECT payment_id FROM holds WHERE status = 'declined' LIMIT 1")
    await c.execute("UPDATE holds SET released_minor = 5 WHERE payment_id = $1", row["payment_id"])
    return [row["payment_id"]]


async def capture_asked_for_another_amount(c: Any) -> list[str]:
    # The capture funds accepted says one amount, clearing captured another.
    row = await _one(
        c, "SELECT payment_id, amount_minor FROM holds WHERE status = 'captured' AND amount_minor > 1 LIMIT 1"
    )
    await c.execute("UPDATE holds SET capture_minor = $2 WHERE payment_id = $1", row["payment_id"],
                    row["amount_minor"] - 1)  # fmt: skip
    return [row["payment_id"]]


# --- refunds --------------------------------------------------------------------------------------


async def refund_total_inflated(c: Any) -> list[str]:
    # The payment says more was refunded than its refunds add up to.
    row = await _one(c, "SELECT payment_id FROM payments WHERE refunded_minor > 0 AND refunded_minor < gross_minor")
    await c.execute("UPDATE payments SET refunded_minor = refunded_minor + 1 WHERE payment_id = $1", row["payment_id"])
    return [row["payment_id"]]


async def refund_journal_without_refund(c: Any) -> list[str]:
    # A refund journal nobody refunded; its two legs cancel on the fee account, so no balance moves.
    await _journal(c, "refund:ghost", "EUR", [("platform:fees:EUR", 1), ("platform:fees:EUR", -1)], kind="refund")
    return ["refund:ghost"]


async def settlement_item_for_no_refund(c: Any) -> list[str]:
    # A negative settlement item for a refund funds never made, in an open batch.
    await c.execute(
        """INSERT INTO settlement_batches (batch_id, merchant_id, currency, cycle_start, cycle_end, cutoff_at, status,
                                           opened_at)
           VALUES ('bad:refund-batch', 'merchant-001', 'EUR', now() + interval '9 days', now() + interval '10 days',
                   now() + interval '10 days', 'open', now())"""
    )
    await c.execute(
        """INSERT INTO settlement_refund_items (refund_id, payment_id, batch_id, merchant_id, currency, gross_minor,
                                                fee_minor, net_minor, event_time, added_at)
           VALUES ('ghost-refund', 'ghost-payment', 'bad:refund-batch', 'merchant-001', 'EUR', 10, 0, 10, now(),
                   now())"""
    )
    return ["ghost-refund"]


BREAKAGES: dict[str, tuple[Breakage, str]] = {
    "rejected payment with a hold": (rejected_payment_with_a_hold, "payment_status_matches_stage_records"),
    "item without a payment": (item_without_a_payment, "settled_once_and_none_missing"),
    "entry outside any journal": (entry_outside_any_journal, "ledger_sums_to_zero_per_currency"),
    "merchant account overdrawn": (merchant_account_overdrawn, "merchant_pending_matches_open_settlement"),
    "customer available negative": (customer_available_negative, "available_not_negative"),
    "second clearing journal": (second_clearing_journal, "one_effect_per_payment"),
    "second payout journal": (second_payout_journal, "one_effect_per_payment"),
    "clearing names another payer": (clearing_names_another_payer, "clearing_matches_journal"),
    "captured hold without clearing": (captured_hold_without_clearing, "captured_hold_has_clearing"),
    "clearing with a released hold": (clearing_with_released_hold, "captured_hold_has_clearing"),
    "item names another merchant": (item_names_another_merchant, "items_match_clearings"),
    "amounts moved between items": (amounts_moved_between_items, "items_match_clearings"),
    "item without clearing": (item_without_clearing, "items_match_clearings"),
    "closed account funded by hand": (closed_account_funded_by_hand, "closed_account_holds_nothing"),
    "deposit recorded for another account": (deposit_recorded_for_another_account, "deposit_has_its_journal"),
    "second deposit journal": (second_deposit_journal, "deposit_has_its_journal"),
    "second withdrawal journal": (second_withdrawal_journal, "withdrawal_has_its_journal"),
    "withdrawal recorded for another account": (
        withdrawal_recorded_for_another_account,
        "withdrawal_has_its_journal",
    ),
    "money from funding without a deposit": (money_from_funding_without_a_deposit, "funding_matches_deposits"),
    "money taken from payout clearing": (money_taken_from_payout_clearing, "payout_clearing_matches_payouts"),
    "hold left open past its deadline": (hold_left_open_past_its_deadline, "hold_not_open_past_deadline"),
    "declined hold releasing money": (declined_hold_releasing_money, "hold_ends_whole"),
    "capture asked for another amount": (capture_asked_for_another_amount, "captured_amount_matches_clearing"),
    "refund total inflated": (refund_total_inflated, "refunds_within_captured"),
    "refund journal without refund": (refund_journal_without_refund, "refund_has_its_journal"),
    "settlement item for no refund": (settlement_item_for_no_refund, "refund_settled_once"),
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
        for account_id, amount in await _fee_to_merchant(c, row["currency"], 1):
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


async def test_a_journal_for_a_declined_withdrawal_is_reported_with_the_money_it_paid_out(settled: Settings) -> None:
    """A withdrawal journal for a request funds declined cannot break withdrawal_has_its_journal alone
    when it moves money as a withdrawal does: the payout-clearing account then holds more than was paid
    out, and that is reported too. No guard refuses it: the declined operation still names no journal."""

    async def journal_for_declined(c: Any) -> list[str]:
        await _journal(
            c,
            "withdrawal:wd-a-too-much",
            "EUR",
            [(ACCOUNT_A, -1_000), (payout_clearing_account("EUR"), 1_000)],
            kind="withdrawal",
            request_id="wd-a-too-much",
        )
        await _set_balance(c, ACCOUNT_A, -1_000)
        return ["withdrawal:wd-a-too-much"]

    report, (journal_id,) = await _reconcile_after(settled, journal_for_declined)
    failed = {v.invariant: v for v in report.failures()}
    assert set(failed) == {"withdrawal_has_its_journal", "payout_clearing_matches_payouts"}, [
        str(v) for v in failed.values()
    ]
    assert any(journal_id in row.values() for row in failed["withdrawal_has_its_journal"].examples)
    assert any("EUR" in row.values() for row in failed["payout_clearing_matches_payouts"].examples)


async def test_a_legacy_funding_journal_is_counted_so_reconcile_stays_green(settled: Settings) -> None:
    """Accounts funded before deposits existed were funded by `funding` journals (funding -x, customer
    +x) with no operation behind them: funding_matches_deposits counts them as they are, so a ledger
    holding one reconciles."""

    async def legacy_funding(c: Any) -> list[str]:
        await _journal(c, "fund:legacy", "EUR", [(funding_account("EUR"), -9_000), (ACCOUNT_C, 9_000)], kind="funding")
        await _set_balance(c, ACCOUNT_C, 9_000)
        return []

    report, _ = await _reconcile_after(settled, legacy_funding)
    assert report.failures() == [], [str(v) for v in report.failures()]
    assert "funding_matches_deposits" in report.checked
