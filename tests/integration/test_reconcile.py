"""Each invariant catches the breakage it exists for; a consistent ledger passes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from paystream.db.pool import connect
from paystream.prepare import drop_database
from paystream.reconcile import reconcile
from paystream.settings import Settings
from tests.support.pipeline import drain, fresh_environment, generate, publish, wait_terminal

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def settled() -> Settings:
    settings = await fresh_environment("recon")
    generated = generate(120, settings.namespace.rstrip("."), seed=21)
    await publish(settings, generated)
    await drain(settings)
    await wait_terminal(settings, [g.payment.payment_id for g in generated])
    yield settings
    await drop_database(settings)


async def break_customer_balance(c: Any) -> None:
    await c.execute("UPDATE accounts SET balance_minor = balance_minor + 1 WHERE account_id = 'payer-000002'")


async def break_held(c: Any) -> None:
    await c.execute("UPDATE accounts SET held_minor = held_minor + 7 WHERE account_id = 'payer-000002'")


async def unbalanced_journal(c: Any) -> None:
    await c.execute("INSERT INTO journals VALUES ('bad:1', 'correction', NULL, NULL, 'EUR', now())")
    await c.execute(
        "INSERT INTO entries (journal_id, account_id, currency, amount_minor, created_at)"
        " VALUES ('bad:1', 'platform:fees:EUR', 'EUR', 5, now())"
    )


async def batch_total_off_by_one(c: Any) -> None:
    await c.execute("ALTER TABLE settlement_batches DISABLE TRIGGER settlement_batches_immutable")
    await c.execute(
        "UPDATE settlement_batches SET net_minor = net_minor + 1"
        " WHERE batch_id = (SELECT batch_id FROM settlement_batches WHERE status = 'closed' LIMIT 1)"
    )


async def settled_without_item(c: Any) -> None:
    await c.execute(
        "DELETE FROM settlement_items WHERE payment_id = (SELECT payment_id FROM payments WHERE status = 'settled'"
        " LIMIT 1)"
    )


async def status_disagrees(c: Any) -> None:
    await c.execute(
        "UPDATE payments SET status = 'rejected' WHERE payment_id = (SELECT payment_id FROM payments"
        " WHERE status = 'declined' LIMIT 1)"
    )


async def day_total_drifts(c: Any) -> None:
    await c.execute(
        "UPDATE risk_merchant_day_totals SET approved_minor = approved_minor + 1"
        " WHERE (merchant_id, currency, day) ="
        " (SELECT merchant_id, currency, day FROM risk_merchant_day_totals LIMIT 1)"
    )


BREAKAGES: dict[str, tuple[Callable[[Any], Awaitable[None]], str]] = {
    "balance": (break_customer_balance, "customer_balance_matches_entries"),
    "held": (break_held, "customer_held_matches_open_holds"),
    "journal": (unbalanced_journal, "journal_balances"),
    "batch": (batch_total_off_by_one, "closed_batch_totals"),
    "missing item": (settled_without_item, "settled_once_and_none_missing"),
    "status": (status_disagrees, "payment_status_matches_stage_records"),
    "day total": (day_total_drifts, "risk_day_totals_match_decisions"),
}


async def test_consistent_ledger_passes(settled: Settings) -> None:
    connection = await connect(settled)
    try:
        report = await reconcile(connection)
    finally:
        await connection.close()
    assert report.failures() == []
    assert len(report.checked) >= 12


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
async def test_invariant_catches_breakage(settled: Settings, breakage: str) -> None:
    action, invariant = BREAKAGES[breakage]
    connection = await connect(settled)
    try:
        transaction = connection.transaction()
        await transaction.start()
        try:
            await action(connection)
            report = await reconcile(connection, own_snapshot=False)
        finally:
            await transaction.rollback()
    finally:
        await connection.close()
    assert invariant in {v.invariant for v in report.failures()}, report.failures()
