"""Sums of amounts near the schema maximum (10^15 minor units) on the real PostgreSQL server.

One payment is at most `AMOUNT_MINOR_MAX`; PostgreSQL's bigint holds at most
2^63 - 1 (about 9.22 * 10^18). So 9,223 maximal amounts still fit in one sum,
and 9,224 do not. These tests put that many items in settlement batches (rows
written directly, in an isolated database) and check what the batch close, the
settlement worker and reconcile do there; and that the risk stage's merchant
day totals stop at the daily limit, whose cap (2^57) is what keeps a batch
written by the pipeline inside bigint.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from msgspec import structs

from paystream.db.pool import connect
from paystream.generator import GeneratedPayment
from paystream.ledger import merchant_pending_account, payout_clearing_account
from paystream.prepare import drop_database
from paystream.reconcile import reconcile
from paystream.settings import Settings
from schemas.money import AMOUNT_MINOR_MAX
from tests.support.pipeline import drain, fresh_environment, generate, publish
from workers.settlement import close_due_batches

pytestmark = pytest.mark.integration

BIGINT_MAX = 2**63 - 1
FITS = BIGINT_MAX // AMOUNT_MINOR_MAX  # 9,223 maximal amounts still sum inside a bigint
OVERFLOWING = 10_000  # 10^19: past bigint
# The merchant daily limit's cap (risk_limits CHECK merchant_daily_limit_fits_a_batch, migration 003).
DAILY_LIMIT_CAP = 2**57
# The maximum amount at 2.9% + 30: fee 29_000_000_000_030, net 970_999_999_999_970.
FEE = 29_000_000_000_030
NET = AMOUNT_MINOR_MAX - FEE

# Unreachable through risk since the daily limit's cap, but guarded in the close too: a batch
# whose gross passes 2^63 - 1 (more than 9,223 items of 10^15) used to raise 22003 'bigint out of
# range' in the close, roll it back whole, and kill the settlement worker on every tick.


@pytest.fixture
async def environment() -> AsyncIterator[Settings]:
    settings = await fresh_environment("bigsum")
    yield settings
    await drop_database(settings)


async def add_batch(
    connection: asyncpg.Connection, merchant: str, cutoff: datetime, items: int, gross: int, fee: int
) -> str:
    """An open EUR batch of `items` identical settlement items, due at `cutoff`; returns its id."""
    batch_id = f"{merchant}:EUR:{cutoff:%Y%m%dT%H%M%SZ}"
    await connection.execute(
        """INSERT INTO accounts (account_id, kind, owner_id, currency) VALUES ($1, 'merchant_pending', $2, 'EUR')
           ON CONFLICT (account_id) DO NOTHING""",
        merchant_pending_account(merchant, "EUR"),
        merchant,
    )
    await connection.execute(
        """INSERT INTO settlement_batches (batch_id, merchant_id, currency, cycle_start, cycle_end, cutoff_at,
                                           status, opened_at)
           VALUES ($1, $2, 'EUR', $3, $3, $3, 'open', $3)""",
        batch_id,
        merchant,
        cutoff,
    )
    await connection.execute(
        """INSERT INTO settlement_items (payment_id, batch_id, merchant_id, currency, gross_minor, fee_minor,
                                         net_minor, event_time, added_at)
           SELECT $1 || ':' || n, $1, $2, 'EUR', $3::bigint, $4::bigint, $3::bigint - $4::bigint, $5, $5
           FROM generate_series(1, $6::int) AS n""",
        batch_id,
        merchant,
        gross,
        fee,
        cutoff,
        items,
    )
    return batch_id


async def batch_row(connection: asyncpg.Connection, batch_id: str) -> asyncpg.Record:
    return await connection.fetchrow(
        """SELECT status, item_count, gross_minor, fee_minor, net_minor, payout_journal_id, published_at
           FROM settlement_batches WHERE batch_id = $1""",
        batch_id,
    )


async def assert_closed_batches_add_up(connection: asyncpg.Connection) -> None:
    """Every closed batch's totals are the exact (Python integer) sums of its items, and its payout is net."""
    for batch in await connection.fetch("SELECT * FROM settlement_batches WHERE status = 'closed'"):
        items = await connection.fetch(
            "SELECT gross_minor, fee_minor, net_minor FROM settlement_items WHERE batch_id = $1", batch["batch_id"]
        )
        assert batch["item_count"] == len(items)
        assert batch["gross_minor"] == sum(i["gross_minor"] for i in items)
        assert batch["fee_minor"] == sum(i["fee_minor"] for i in items)
        assert batch["net_minor"] == sum(i["net_minor"] for i in items)
        payout = await connection.fetch(
            "SELECT account_id, amount_minor FROM entries WHERE journal_id = $1", batch["payout_journal_id"]
        )
        currency = batch["currency"].strip()
        assert sorted((r["account_id"], r["amount_minor"]) for r in payout) == sorted(
            [
                (merchant_pending_account(batch["merchant_id"], currency), -batch["net_minor"]),
                (payout_clearing_account(currency), batch["net_minor"]),
            ]
        )


async def test_a_batch_just_inside_bigint_closes_with_exact_totals(environment: Settings) -> None:
    now = datetime.now(UTC)
    connection = await connect(environment)
    try:
        batch_id = await add_batch(connection, "big-merchant", now - timedelta(minutes=5), FITS, AMOUNT_MINOR_MAX, FEE)
        assert await close_due_batches(connection, now) == [batch_id]
        row = await batch_row(connection, batch_id)
        # 9,223 * 10^15 = 9_223_000_000_000_000_000 <= 2^63 - 1 = 9_223_372_036_854_775_807
        assert (row["status"], row["item_count"], row["gross_minor"]) == ("closed", 9_223, 9_223_000_000_000_000_000)
        assert row["fee_minor"] == 9_223 * 29_000_000_000_030 == 267_467_000_000_276_690
        assert row["net_minor"] == 9_223 * 970_999_999_999_970 == 8_955_532_999_999_723_310
        await assert_closed_batches_add_up(connection)
        # reconcile's own sums (numeric in SQL) cope with these totals: it runs, and the checks that
        # read them hold. (Others fail here: the items were written without payments or clearings.)
        report = await reconcile(connection)
        failed = {v.invariant for v in report.failures()}
        assert {"closed_batch_totals", "journal_balances", "ledger_sums_to_zero_per_currency"}.isdisjoint(failed)
        assert "closed_batch_totals" in report.checked
    finally:
        await connection.close()


async def test_a_batch_past_bigint_does_not_block_other_closes(environment: Settings) -> None:
    now = datetime.now(UTC)
    connection = await connect(environment)
    try:
        poison = await add_batch(
            connection, "big-merchant", now - timedelta(minutes=10), OVERFLOWING, AMOUNT_MINOR_MAX, FEE
        )
        ordinary = await add_batch(connection, "small-merchant", now - timedelta(minutes=5), 3, 4_000, 146)
        closed = await close_due_batches(connection, now)
        assert ordinary in closed
        row = await batch_row(connection, ordinary)
        assert (row["status"], row["item_count"], row["gross_minor"], row["fee_minor"], row["net_minor"]) == (
            "closed",
            3,
            12_000,
            438,
            11_562,
        )
        # However the big batch ends (closed with exact totals, left open, split), no total is clamped or wrapped.
        await assert_closed_batches_add_up(connection)
        assert (await batch_row(connection, poison))["status"] in ("open", "closed")
    finally:
        await connection.close()


async def test_the_settlement_worker_survives_a_batch_past_bigint(environment: Settings) -> None:
    now = datetime.now(UTC)
    connection = await connect(environment)
    try:
        await add_batch(connection, "big-merchant", now - timedelta(minutes=10), OVERFLOWING, AMOUNT_MINOR_MAX, FEE)
        ordinary = await add_batch(connection, "small-merchant", now - timedelta(minutes=5), 3, 4_000, 146)
    finally:
        await connection.close()
    # Before the close summed as numeric, its first tick raised, the loop does not retry a data
    # error, and the worker died (in `paystream run`, taking the other stages with it).
    await drain(environment, stages=["settlement"], idle_exit_ms=1_500)
    connection = await connect(environment)
    try:
        row = await batch_row(connection, ordinary)
        assert row["status"] == "closed"
        assert row["published_at"] is not None
        await assert_closed_batches_add_up(connection)
    finally:
        await connection.close()


async def test_the_merchant_daily_limit_is_capped_so_a_batch_fits(environment: Settings) -> None:
    """A batch holds under 33 merchant-days of approvals (migration 003): a cap of 2^57 a day keeps it in bigint."""
    assert 33 * DAILY_LIMIT_CAP < BIGINT_MAX < 64 * DAILY_LIMIT_CAP
    connection = await connect(environment)
    try:
        await connection.execute(
            "UPDATE risk_limits SET merchant_daily_amount_max_minor = $1 WHERE currency = 'EUR'", DAILY_LIMIT_CAP
        )
        with pytest.raises(asyncpg.CheckViolationError, match="merchant_daily_limit_fits_a_batch"):
            await connection.execute(
                "UPDATE risk_limits SET merchant_daily_amount_max_minor = $1 WHERE currency = 'EUR'",
                DAILY_LIMIT_CAP + 1,
            )
    finally:
        await connection.close()


# A wrong day total makes the risk stage retry its batch until its retries run out (5 minutes): fail sooner.
@pytest.mark.timeout(120)
async def test_merchant_day_totals_stop_at_the_capped_limit(environment: Settings) -> None:
    """Approvals of maximal amounts stop at the daily limit (at its cap), whatever the day already holds."""
    ordinary = [g.payment for g in generate(400, environment.namespace.rstrip("."), seed=5) if g.kind == "ordinary"]
    eur = list({p.payer_account: p for p in ordinary if p.currency == "EUR"}.values())[:5]
    merchant = eur[0].merchant_id
    payments = [structs.replace(p, merchant_id=merchant, amount_minor=AMOUNT_MINOR_MAX) for p in eur]
    day = payments[0].created_at.astimezone(UTC).date()
    assert all(p.created_at.astimezone(UTC).date() == day for p in payments)
    already = DAILY_LIMIT_CAP - 2 * AMOUNT_MINOR_MAX - AMOUNT_MINOR_MAX // 2  # room for two and a half more
    connection = await connect(environment)
    try:
        await connection.execute(
            """UPDATE risk_limits SET txn_amount_max_minor = $1, payer_10m_amount_max_minor = $2,
                      payer_24h_amount_max_minor = $2, merchant_daily_amount_max_minor = $3
               WHERE currency = 'EUR'""",
            AMOUNT_MINOR_MAX,
            BIGINT_MAX,
            DAILY_LIMIT_CAP,
        )
        await connection.execute(
            "INSERT INTO risk_merchant_day_totals VALUES ($1, 'EUR', $2, $3)", merchant, day, already
        )
    finally:
        await connection.close()

    # One at a time, so the order (and so which two fit) is known.
    for p in payments:
        await publish(environment, [GeneratedPayment("ordinary", p)])
        await drain(environment, stages=["risk"], idle_exit_ms=1_000)

    connection = await connect(environment)
    try:
        decisions = {
            r["payment_id"]: (r["decision"], list(r["reasons"]))
            for r in await connection.fetch("SELECT payment_id, decision, reasons FROM risk_decisions")
        }
        total = await connection.fetchval(
            "SELECT approved_minor FROM risk_merchant_day_totals WHERE merchant_id = $1 AND day = $2", merchant, day
        )
        dead = await connection.fetchval("SELECT count(*) FROM dead_letters")
    finally:
        await connection.close()
    assert [decisions[p.payment_id][0] for p in payments] == [
        "approved",
        "approved",
        "rejected",
        "rejected",
        "rejected",
    ]
    # already + 3 * 10^15 = 2^57 + 0.5 * 10^15 > the limit 2^57: rejected, never added.
    over = already + 3 * AMOUNT_MINOR_MAX
    assert decisions[payments[2].payment_id][1] == [f"merchant_daily_limit: {over} > {DAILY_LIMIT_CAP}"]
    assert total == already + 2 * AMOUNT_MINOR_MAX == DAILY_LIMIT_CAP - AMOUNT_MINOR_MAX // 2
    assert dead == 0
