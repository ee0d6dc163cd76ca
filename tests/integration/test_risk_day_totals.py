"""The merchant daily limit on the real stack: approvals add up across batches, per UTC day of event time."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
from msgspec import structs

from paystream.db.pool import connect
from paystream.generator import GeneratedPayment
from paystream.prepare import drop_database
from paystream.settings import Settings
from schemas.payments import PaymentRequested
from tests.support.pipeline import drain, fresh_environment, generate, publish

pytestmark = pytest.mark.integration

DAILY_LIMIT_MINOR = 10_000


@pytest.fixture
async def environment() -> Settings:
    settings = await fresh_environment("riskday")
    connection = await connect(settings)
    try:
        await connection.execute(
            "UPDATE risk_limits SET merchant_daily_amount_max_minor = $1 WHERE currency = 'EUR'", DAILY_LIMIT_MINOR
        )
    finally:
        await connection.close()
    yield settings
    await drop_database(settings)


def _eur_payments(settings: Settings, count: int) -> list[PaymentRequested]:
    """Ordinary EUR payments of distinct payers, all to one merchant, so only the daily limit can bite."""
    ordinary = [g.payment for g in generate(400, settings.namespace.rstrip("."), seed=5) if g.kind == "ordinary"]
    eur = [p for p in ordinary if p.currency == "EUR"]
    by_payer = list({p.payer_account: p for p in eur}.values())
    assert len(by_payer) >= count, "the demo world has too few EUR payers for this test"
    merchant = by_payer[0].merchant_id
    return [structs.replace(p, merchant_id=merchant) for p in by_payer[:count]]


async def test_the_daily_limit_counts_approvals_of_earlier_batches_per_utc_day(environment: Settings) -> None:
    first, second, third, fourth, fifth, sixth = _eur_payments(environment, 6)
    wave_one = [structs.replace(p, amount_minor=3_000) for p in (first, second, third)]
    over = structs.replace(fourth, amount_minor=3_000)
    # Same merchant, previous UTC day: a day of its own, so it is approved whatever today holds.
    # One minute before today's UTC midnight is always inside the 24-hour event-time window.
    midnight = first.created_at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday = structs.replace(fifth, amount_minor=3_000, created_at=midnight - timedelta(minutes=1))
    still_fits = structs.replace(sixth, amount_minor=500)

    # Three waves, so that each is its own batch: within one batch, payments of
    # different payers come from different partitions in no fixed order.
    for wave in (wave_one, [over, yesterday], [still_fits]):
        await publish(environment, [GeneratedPayment("ordinary", p) for p in wave])
        await drain(environment, stages=["risk"], idle_exit_ms=1_500)

    connection = await connect(environment)
    try:
        decisions = {
            row["payment_id"]: (row["decision"], list(row["reasons"]))
            for row in await connection.fetch("SELECT payment_id, decision, reasons FROM risk_decisions")
        }
        totals = {
            (row["day"], row["approved_minor"])
            for row in await connection.fetch("SELECT day, approved_minor FROM risk_merchant_day_totals")
        }
    finally:
        await connection.close()

    for payment in (*wave_one, yesterday, still_fits):
        assert decisions[payment.payment_id] == ("approved", []), payment.payment_id
    # 9,000 approved earlier today + 3,000; a rejected amount is not added to the day (500 still fits after it).
    assert decisions[over.payment_id] == ("rejected", [f"merchant_daily_limit: 12000 > {DAILY_LIMIT_MINOR}"])
    today = first.created_at.date()
    assert totals == {(today, 9_500), (today - timedelta(days=1), 3_000)}
