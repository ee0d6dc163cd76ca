"""Driving one stage's `apply` directly on real PostgreSQL connections, for race and retry tests.

The loop is left out on purpose: these tests interleave two transactions of
one stage step by step (one holds its locks while the other waits), which is
what two consumers, or a retry racing its own first commit, do in production.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from paystream.db.pool import connect
from paystream.publisher import PaymentPublisher
from paystream.settings import Settings
from paystream.stage.contract import Accepted, Origin
from schemas.codec import encode
from schemas.money import CurrencyCode
from schemas.payments import PaymentRequested

LOCK_WAIT_S = 60.0


def payment(
    payment_id: str,
    payer: str = "payer-000000",
    merchant: str = "merchant-000",
    amount_minor: int = 1_000,
    currency: CurrencyCode = "EUR",
    created_at: datetime | None = None,
) -> PaymentRequested:
    """A request the demo world approves: payer-000000 is open and rich in EUR, merchant-000 takes EUR."""
    return PaymentRequested(
        payment_id=payment_id,
        payer_account=payer,
        merchant_id=merchant,
        amount_minor=amount_minor,
        currency=currency,
        country="DE",
        method="card",
        created_at=created_at or datetime.now(UTC),
    )


def accepted(event: Any, offset: int = 0, topic: str = "test", partition: int = 0) -> Accepted[Any]:
    return Accepted(Origin(topic, partition, offset), event, encode(event))


async def wait_until_blocked(observer: Any, pid: int) -> None:
    """Until backend `pid` waits on a lock: the second transaction reached the first one's locks."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        waiting = await observer.fetchval("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid)
        if waiting:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"backend {pid} never waited on a lock within {LOCK_WAIT_S} s")
        await asyncio.sleep(0.02)


async def race(
    settings: Settings, stage: Any, first: Sequence[Any], second: Sequence[Any], at: datetime
) -> tuple[Any, Any]:
    """Apply `first` in an open transaction, start `second` in another, commit the first, finish the second."""
    one, two, observer = await connect(settings), await connect(settings), await connect(settings)
    try:
        tx_one = one.transaction()
        await tx_one.start()
        first_result = await stage.apply(one, first, at)
        tx_two = two.transaction()
        await tx_two.start()
        pid = two.get_server_pid()
        second_task = asyncio.create_task(stage.apply(two, second, at + timedelta(seconds=5)))
        await wait_until_blocked(observer, pid)
        await tx_one.commit()
        try:
            second_result: Any = await second_task
        except Exception as error:  # noqa: BLE001 - the test inspects what the second one raised
            second_result = error
            await tx_two.rollback()
        else:
            await tx_two.commit()
        return first_result, second_result
    finally:
        for connection in (one, two, observer):
            await connection.close()


async def apply_committed(settings: Settings, stage: Any, events: Sequence[Any], at: datetime) -> Any:
    """`stage.apply` of hand-made events (offsets 0, 1, ...) in one committed transaction; its StageResult."""
    connection = await connect(settings)
    try:
        async with connection.transaction():
            return await stage.apply(connection, [accepted(e, offset=i) for i, e in enumerate(events)], at)
    finally:
        await connection.close()


async def through_funds(settings: Settings, event: Any, at: datetime) -> Any:
    """Risk then funds, each committed: what funds emits for one payment or request risk passes on."""
    from workers.funds import FundsStage
    from workers.risk import RiskStage

    risk = await apply_committed(settings, RiskStage(settings), [event], at)
    assert risk.refused == [] and len(risk.outputs) == 1, risk
    return await apply_committed(settings, FundsStage(settings), [risk.outputs[0].event], at)


async def publish_requests(settings: Settings, requests: Sequence[PaymentRequested]) -> None:
    """Publish hand-made payment requests (the generator's helper takes generated ones)."""
    async with PaymentPublisher(settings, client_id="paystream-tests") as publisher:
        for request in requests:
            await publisher.publish(request)
