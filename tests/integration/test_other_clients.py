"""Upstream and downstream with an independent client: confluent-kafka (librdkafka), no paystream code.

Payments are built as plain JSON from the documented contract and published
with librdkafka; the pipeline processes them like any other. Settlement
results are consumed with librdkafka and keyed on batch id.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
import pytest
from confluent_kafka import Consumer, Producer

from paystream.db.pool import connect
from paystream.demo_data import build_world
from paystream.downstream import follow
from paystream.prepare import drop_database
from paystream.settings import Settings
from paystream.topic_scan import read_topic
from schemas.payments import outcome_event_id
from tests.support.pipeline import TERMINAL, drain, fresh_environment, wait_terminal
from topology.topics import PAYMENTS_OUTCOMES, PAYMENTS_REQUESTED, SETTLEMENTS_CLOSED

pytestmark = pytest.mark.integration

PAYMENTS = 60


def publish_with_librdkafka(settings: Settings, prefix: str) -> list[str]:
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            # The partitioner Java clients and aiokafka use: one payer, one partition.
            "partitioner": "murmur2_random",
        }
    )
    world = build_world()  # only to pick real, funded, unblocked payers that merchant-003 accepts
    skip = set(world.blocked_payers) | set(world.poor_payers)
    payers = [p for p in world.payers if p.status == "open" and p.account_id not in skip and p.currency != "GBP"]
    ids = []
    for index in range(PAYMENTS):
        payment_id = f"{prefix}-{index:04d}"
        payer = payers[index * 7 % len(payers)]
        document = {
            "schema": "payment.requested",
            "v": 1,
            "payment_id": payment_id,
            "payer_account": payer.account_id,
            "merchant_id": "merchant-003",
            "amount_minor": 1_000 + index,
            "currency": payer.currency,
            "country": "US",
            "method": "card",
            "created_at": datetime.now(UTC).isoformat(),
        }
        producer.produce(
            settings.topic(PAYMENTS_REQUESTED), key=payer.account_id.encode(), value=json.dumps(document).encode()
        )
        ids.append(payment_id)
    assert producer.flush(30) == 0
    return ids


def consume_with_librdkafka(settings: Settings, group: str) -> list[dict[str, object]]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([settings.topic(SETTLEMENTS_CLOSED)])
    events = []
    empty_polls = 0
    try:
        while empty_polls < 10:
            message = consumer.poll(1.0)
            if message is None:
                empty_polls += 1
                continue
            assert message.error() is None, message.error()
            value = message.value()
            assert value is not None
            events.append(json.loads(value))
            empty_polls = 0
    finally:
        consumer.close()
    return events


@dataclass
class Flowed:
    settings: Settings
    payment_ids: list[str]
    statuses: dict[str, str]


@pytest.fixture(scope="module")
async def flowed() -> AsyncIterator[Flowed]:
    """Payments published with librdkafka and processed to the end by the pipeline."""
    settings = await fresh_environment("ext")
    try:
        ids = await asyncio.to_thread(publish_with_librdkafka, settings, settings.namespace.rstrip("."))
        await drain(settings)
        yield Flowed(settings, ids, await wait_terminal(settings, ids))
    finally:
        await drop_database(settings)


async def test_librdkafka_payments_flow_and_settlements_are_read_by_librdkafka(flowed: Flowed) -> None:
    environment, ids, statuses = flowed.settings, flowed.payment_ids, flowed.statuses
    assert sorted(statuses) == sorted(ids)
    assert set(statuses.values()) <= set(TERMINAL)
    assert list(statuses.values()).count("settled") == PAYMENTS

    events = await asyncio.to_thread(consume_with_librdkafka, environment, f"{environment.namespace}downstream")
    by_batch = {e["batch_id"]: e for e in events}
    connection = await connect(environment)
    try:
        rows = await connection.fetch(
            "SELECT batch_id, item_count, net_minor FROM settlement_batches WHERE status = 'closed'"
        )
    finally:
        await connection.close()
    assert {r["batch_id"]: (r["item_count"], r["net_minor"]) for r in rows} == {
        b: (e["item_count"], e["net_minor"]) for b, e in by_batch.items()
    }


def expected_outcome_ids(statuses: dict[str, str]) -> set[str]:
    """The outcome event ids the pipeline publishes for payments that ended with these statuses."""
    published_on_the_way = {"settled": ("cleared", "settled")}  # every other terminal status is one outcome
    return {
        outcome_event_id(payment_id, outcome)
        for payment_id, status in statuses.items()
        for outcome in published_on_the_way.get(status, (status,))
    }


async def test_python_follow_helper_yields_each_event_once(flowed: Flowed) -> None:
    environment = flowed.settings
    seen = [d.event async for d in follow(environment, "outcomes", from_beginning=True, idle_exit_ms=2_000)]
    ids = [getattr(e, "event_id") for e in seen]  # noqa: B009
    # What is on the topic, read without the helper (re-deliveries included): every one of it arrives.
    on_topic = await read_topic(environment, environment.topic(PAYMENTS_OUTCOMES))
    published = {msgspec.json.decode(r.value)["event_id"] for r in on_topic}
    assert len(ids) == len(set(ids))
    assert set(ids) == published
    # And that is exactly the outcomes of this run's payments: each cleared and settled, nothing else.
    assert published == expected_outcome_ids(flowed.statuses)
    assert len(published) == 2 * PAYMENTS
