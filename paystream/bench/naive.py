"""The naive baseline: the same four stages, written the way most tutorials write a consumer.

One message at a time: decode, one database transaction (the stage's own
SQL, through the same `apply`), `send_and_wait` each output, commit the
message's offset. Correct, and what paystream's batching is measured against.
It is a benchmark baseline only: no fencing, no dead-letter table, no retries.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from aiokafka import TopicPartition

from paystream.db.pool import create_pool
from paystream.kafka import make_consumer, make_producer
from paystream.settings import Settings
from paystream.stage.contract import Accepted, Origin, Refused
from paystream.stage.dead_letters import dead_letter_outputs
from schemas.codec import Decoder, Invalid, encode
from workers import build_stage


async def run_naive_stage(settings: Settings, stage_name: str, stop: asyncio.Event) -> int:
    """Process one record per transaction and per offset commit until `stop`; returns the records processed."""
    stage = build_stage(stage_name, settings)
    group_id = settings.group(f"naive.{stage_name}")
    decoder = Decoder(stage.input_type, settings.record_bytes_max)
    consumer = make_consumer(settings, group_id, f"naive-{stage_name}", max_poll_records=1)
    producer = make_producer(settings, f"naive-{stage_name}")
    pool = await create_pool(settings, size_max=1)
    processed = 0
    await producer.start()
    await consumer.start()
    try:
        consumer.subscribe([settings.topic(stage.input_topic)])
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=1)
            for tp, records in batch.items():
                for record in records:
                    await _one(settings, stage, decoder, pool, producer, tp, record)
                    await consumer.commit({tp: record.offset + 1})
                    processed += 1
    finally:
        await consumer.stop()
        await producer.stop()
        await pool.close()
    return processed


async def _one(
    settings: Settings, stage: Any, decoder: Decoder[Any], pool: Any, producer: Any, tp: TopicPartition, record: Any
) -> None:
    now = datetime.now(UTC)
    origin = Origin(tp.topic, tp.partition, record.offset)
    decoded = decoder.decode(record.value)
    if isinstance(decoded, Invalid):
        outputs = dead_letter_outputs(stage.name, [Refused(origin, decoded.field, decoded.rule, "", b"")], now)
    else:
        async with pool.acquire() as connection, connection.transaction():
            outputs = (await stage.apply(connection, [Accepted(origin, decoded)], now)).outputs
    for output in outputs:
        await producer.send_and_wait(settings.topic(output.topic), encode(output.event), key=output.key.encode())
