"""Each stage on its own, in pipeline order: what it reads, what it writes, what it emits."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import msgspec
import pytest
from msgspec import structs

from paystream.db.pool import connect
from paystream.generator import GeneratedPayment
from paystream.prepare import drop_database
from paystream.settings import Settings
from paystream.topic_scan import read_topic
from tests.support.pipeline import drain, fresh_environment, generate, publish, wait_terminal
from topology.topics import FUNDS_HELD, PAYMENTS_APPROVED, PAYMENTS_CLEARED, PAYMENTS_OUTCOMES, SETTLEMENTS_CLOSED

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def environment() -> Settings:
    settings = await fresh_environment("stage")
    yield settings
    await drop_database(settings)


async def _count(settings: Settings, sql: str) -> int:
    connection = await connect(settings)
    try:
        return int(await connection.fetchval(sql))
    finally:
        await connection.close()


def _events(records: list[object]) -> list[dict[str, object]]:
    return [msgspec.json.decode(r.value) for r in records]  # type: ignore[attr-defined]


async def test_stages_one_at_a_time(environment: Settings) -> None:
    generated = generate(200, environment.namespace.rstrip("."), seed=31)
    await publish(environment, generated)
    topic = environment.topic

    await drain(environment, stages=["risk"], idle_exit_ms=2_000)
    approved = await _count(environment, "SELECT count(*) FROM risk_decisions WHERE decision = 'approved'")
    rejected = await _count(environment, "SELECT count(*) FROM risk_decisions WHERE decision = 'rejected'")
    assert approved + rejected == 200
    assert len(await read_topic(environment, topic(PAYMENTS_APPROVED))) == approved
    outcomes = Counter(e["status"] for e in _events(await read_topic(environment, topic(PAYMENTS_OUTCOMES))))
    assert outcomes == {"rejected": rejected}
    assert await _count(environment, "SELECT count(*) FROM holds") == 0

    await drain(environment, stages=["funds"], idle_exit_ms=2_000)
    held = await _count(environment, "SELECT count(*) FROM holds WHERE status = 'held'")
    declined = await _count(environment, "SELECT count(*) FROM holds WHERE status = 'declined'")
    assert held + declined == approved
    assert len(await read_topic(environment, topic(FUNDS_HELD))) == held
    assert await _count(environment, "SELECT sum(held_minor) FROM accounts") == await _count(
        environment, "SELECT sum(amount_minor) FROM holds WHERE status = 'held'"
    )
    assert await _count(environment, "SELECT count(*) FROM clearings") == 0

    await drain(environment, stages=["clearing"], idle_exit_ms=2_000)
    assert await _count(environment, "SELECT count(*) FROM clearings") == held
    assert await _count(environment, "SELECT count(*) FROM holds WHERE status = 'held'") == 0
    assert await _count(environment, "SELECT sum(held_minor) FROM accounts") == 0
    cleared_events = _events(await read_topic(environment, topic(PAYMENTS_CLEARED)))
    assert len(cleared_events) == held
    assert all(e["gross_minor"] == e["fee_minor"] + e["net_minor"] for e in cleared_events)
    assert await _count(environment, "SELECT count(*) FROM settlement_items") == 0

    await drain(environment, stages=["settlement"], idle_exit_ms=4_000)
    statuses = await wait_terminal(environment, [g.payment.payment_id for g in generated], timeout_s=30)
    assert Counter(statuses.values())["settled"] == held
    closed = _events(await read_topic(environment, topic(SETTLEMENTS_CLOSED)))
    assert sum(e["item_count"] for e in closed) == held


async def test_late_payment_goes_to_the_next_batch(environment: Settings) -> None:
    ordinary = [g for g in generate(40, f"{environment.namespace.rstrip('.')}-late", seed=41) if g.kind == "ordinary"]
    first, second = ordinary[0], ordinary[1]
    old = first.payment.created_at - timedelta(minutes=5)
    on_time = GeneratedPayment("ordinary", structs.replace(first.payment, created_at=old))
    await publish(environment, [on_time])
    await drain(environment, idle_exit_ms=3_000)
    await wait_terminal(environment, [on_time.payment.payment_id], timeout_s=30)
    # Same merchant, currency and cycle as the closed batch, arriving after its cut-off.
    late = GeneratedPayment(
        "ordinary",
        structs.replace(
            second.payment,
            merchant_id=on_time.payment.merchant_id,
            payer_account=on_time.payment.payer_account,
            currency=on_time.payment.currency,
            created_at=old + timedelta(milliseconds=10),
        ),
    )
    await publish(environment, [late])
    await drain(environment, idle_exit_ms=3_000)
    statuses = await wait_terminal(environment, [late.payment.payment_id], timeout_s=30)
    assert statuses[late.payment.payment_id] == "settled"
    connection = await connect(environment)
    try:
        rows = await connection.fetch(
            """SELECT p.payment_id, b.batch_id, b.cycle_start FROM payments p JOIN settlement_batches b USING (batch_id)
               WHERE p.payment_id = ANY($1::text[])""",
            [on_time.payment.payment_id, late.payment.payment_id],
        )
    finally:
        await connection.close()
    cycle = {r["payment_id"]: r["cycle_start"] for r in rows}
    assert cycle[late.payment.payment_id] - cycle[on_time.payment.payment_id] == timedelta(
        seconds=environment.settlement_cycle_s
    )
