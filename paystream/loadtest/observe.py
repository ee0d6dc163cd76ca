"""Reading payments.outcomes the way a downstream system does: each payment's first outcome, once.

Shared by the load test and the benchmark, which both measure a payment
from its `created_at` to the moment its first outcome is read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import msgspec
from aiokafka import AIOKafkaConsumer

from paystream.settings import Settings
from paystream.topic_scan import topic_partitions
from topology.topics import PAYMENTS_OUTCOMES

# The outcomes that end a payment's way through the stages; `settled` comes later, at the cycle's cut-off.
FIRST_OUTCOMES = frozenset({"rejected", "declined", "failed", "cleared"})
POLL_TIMEOUT_MS = 100


class Outcome(msgspec.Struct):
    """What a measurement needs of an outcome event."""

    payment_id: str
    created_at: datetime
    # The benchmark's pass-through ceiling copies payment.requested records,
    # which have no status, to this topic: each counts as completed.
    status: str = "cleared"


async def first_outcomes(settings: Settings, stop: asyncio.Event) -> AsyncIterator[tuple[datetime, list[Outcome]]]:
    """Per poll until `stop`: when it was read, and the payments whose first outcome it held."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    decoder = msgspec.json.Decoder(Outcome)
    seen: set[str] = set()
    try:
        partitions = await topic_partitions(consumer, settings.topic(PAYMENTS_OUTCOMES))
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS)
            received_at = datetime.now(UTC)
            first: list[Outcome] = []
            for records in batch.values():
                for record in records:
                    outcome = decoder.decode(record.value)
                    if outcome.status in FIRST_OUTCOMES and outcome.payment_id not in seen:
                        seen.add(outcome.payment_id)
                        first.append(outcome)
            yield received_at, first
    finally:
        await consumer.stop()


def latency_us(outcome: Outcome, received_at: datetime) -> int:
    return int((received_at - outcome.created_at).total_seconds() * 1_000_000)
