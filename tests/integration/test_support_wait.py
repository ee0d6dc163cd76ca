"""The test helper `wait_terminal` never returns a half-processed run: at its timeout it fails and says why."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from paystream.db.pool import connect
from paystream.prepare import drop_database
from paystream.settings import Settings
from tests.support.pipeline import fresh_environment, wait_terminal

pytestmark = pytest.mark.integration


@pytest.fixture
async def environment() -> AsyncIterator[Settings]:
    settings = await fresh_environment("wait")
    yield settings
    await drop_database(settings)


async def _insert_payment(settings: Settings, payment_id: str, status: str) -> None:
    connection = await connect(settings)
    try:
        await connection.execute(
            """INSERT INTO payments (payment_id, payer_account, merchant_id, amount_minor, currency, country,
                                     method, created_at, status)
               VALUES ($1, 'payer-000001', 'merchant-001', 100, 'EUR', 'DE', 'card', now(), $2)""",
            payment_id,
            status,
        )
    finally:
        await connection.close()


async def test_terminal_payments_are_returned(environment: Settings) -> None:
    await _insert_payment(environment, "w-settled", "settled")
    await _insert_payment(environment, "w-declined", "declined")
    assert await wait_terminal(environment, ["w-settled", "w-declined"], timeout_s=5) == {
        "w-settled": "settled",
        "w-declined": "declined",
    }


async def test_the_timeout_names_what_is_not_terminal(environment: Settings) -> None:
    await _insert_payment(environment, "w-held", "held")
    await _insert_payment(environment, "w-rejected", "rejected")
    with pytest.raises(AssertionError, match=r"^after 1 s, 2 of 3 payments are not terminal ") as raised:
        await wait_terminal(environment, ["w-held", "w-rejected", "w-never-seen"], timeout_s=1)
    message = str(raised.value)
    assert message.startswith(
        "after 1 s, 2 of 3 payments are not terminal (rejected/declined/failed/voided/expired/settled)"
    )
    assert "e.g. w-held=held, w-never-seen=(no payments row);" in message
    assert "w-rejected" not in message
    assert message.endswith("0 settlement batches unpublished (0 open, 0 closed but not published)")


async def test_the_timeout_counts_unpublished_batches(environment: Settings) -> None:
    await _insert_payment(environment, "w-cleared-then-settled", "settled")
    connection = await connect(environment)
    try:
        await connection.execute(
            """INSERT INTO settlement_batches (batch_id, merchant_id, currency, cycle_start, cycle_end, cutoff_at,
                                               status, opened_at)
               VALUES ('w-open', 'merchant-001', 'EUR', now(), now(), now(), 'open', now())"""
        )
    finally:
        await connection.close()
    with pytest.raises(AssertionError, match=r"^after 1 s, 0 of 1 payments are not terminal") as raised:
        await wait_terminal(environment, ["w-cleared-then-settled"], timeout_s=1)
    assert str(raised.value).endswith("; 1 settlement batches unpublished (1 open, 0 closed but not published)")
