"""A replay changes nothing: neither a republished topic range nor consumer offsets moved back."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer

from paystream.db.pool import connect
from paystream.prepare import drop_database
from paystream.publisher import PaymentPublisher
from paystream.settings import Settings
from paystream.topic_scan import read_topic, topic_partitions
from tests.support.pipeline import drain, fresh_environment, generate, publish, wait_terminal
from topology.topics import FUNDS_HELD, PAYMENTS_APPROVED, PAYMENTS_REQUESTED

pytestmark = pytest.mark.integration

SNAPSHOT_QUERIES = {
    "payments": """SELECT payment_id, status, hold_id, gross_minor, fee_minor, net_minor, journal_id, batch_id
                   FROM payments ORDER BY payment_id""",
    "risk": "SELECT payment_id, decision, reasons FROM risk_decisions ORDER BY payment_id",
    "holds": "SELECT payment_id, status, amount_minor FROM holds ORDER BY payment_id",
    "accounts": "SELECT account_id, balance_minor, held_minor FROM accounts ORDER BY account_id",
    "entries": "SELECT journal_id, account_id, amount_minor FROM entries ORDER BY journal_id, account_id",
    "clearings": "SELECT payment_id, gross_minor, fee_minor, net_minor FROM clearings ORDER BY payment_id",
    "batches": """SELECT batch_id, status, item_count, gross_minor, fee_minor, net_minor
                  FROM settlement_batches ORDER BY batch_id""",
    "items": "SELECT payment_id, batch_id FROM settlement_items ORDER BY payment_id",
    "dead_letters": "SELECT count(*) FROM dead_letters",
}


async def snapshot(settings: Settings) -> dict[str, list[tuple[Any, ...]]]:
    connection = await connect(settings)
    try:
        return {name: [tuple(row) for row in await connection.fetch(sql)] for name, sql in SNAPSHOT_QUERIES.items()}
    finally:
        await connection.close()


@pytest.fixture(scope="module")
async def settled() -> Settings:
    settings = await fresh_environment("replay")
    generated = generate(300, settings.namespace.rstrip("."), seed=11)
    await publish(settings, generated)
    await drain(settings)
    statuses = await wait_terminal(settings, [g.payment.payment_id for g in generated])
    assert len(statuses) == 300
    yield settings
    await drop_database(settings)


async def test_republished_topic_range_changes_nothing(settled: Settings) -> None:
    before = await snapshot(settled)
    records = await read_topic(settled, settled.topic(PAYMENTS_REQUESTED))
    assert len(records) == 300
    async with PaymentPublisher(settled, client_id="replay-test") as publisher:
        for record in records[100:250]:
            await publisher.send_raw(record.key, record.value)
    await drain(settled, idle_exit_ms=3_000)
    after = await snapshot(settled)
    assert after == before


async def _rewind_group(settings: Settings, stage: str, topic: str) -> None:
    """Move a stage's committed offsets (Kafka and PostgreSQL) back to the start of its topic."""
    name = settings.topic(topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=settings.group(stage), enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, name)
        assert tps
        consumer.assign(tps)
        await consumer.commit({tp: 0 for tp in tps})
    finally:
        await consumer.stop()
    connection = await connect(settings)
    try:
        await connection.execute("UPDATE stage_offsets SET next_offset = 0 WHERE group_id = $1", settings.group(stage))
    finally:
        await connection.close()


async def test_offsets_moved_back_change_nothing(settled: Settings) -> None:
    before = await snapshot(settled)
    funds_events_before = len(await read_topic(settled, settled.topic(FUNDS_HELD)))
    await _rewind_group(settled, "funds", PAYMENTS_APPROVED)
    await _rewind_group(settled, "clearing", FUNDS_HELD)
    await drain(settled, stages=("funds", "clearing", "settlement"), idle_exit_ms=3_000)
    after = await snapshot(settled)
    assert after == before
    # The replay re-sent every hold event (same event ids) and the next stage absorbed them.
    funds_events_after = await read_topic(settled, settled.topic(FUNDS_HELD))
    assert len(funds_events_after) == 2 * funds_events_before
    # Byte for byte: one value per event id, however often it was sent.
    by_id: dict[str, set[bytes]] = {}
    for record in funds_events_after:
        by_id.setdefault(msgspec.json.decode(record.value)["event_id"], set()).add(record.value)
    assert {event_id: len(values) for event_id, values in by_id.items()} == dict.fromkeys(by_id, 1)
