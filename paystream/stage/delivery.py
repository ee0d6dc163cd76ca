"""Step 3 of the stage loop, and the rewind of a fenced batch: the producer and consumer calls.

Offsets are committed in `paystream.stage.commits` only (Step 4).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import IllegalStateError

from paystream.kafka import send_in_batches
from paystream.settings import Settings
from paystream.stage.contract import Output
from schemas.codec import encode


async def produce(producer: AIOKafkaProducer, settings: Settings, outputs: Sequence[Output]) -> None:
    """Send the outputs and wait for every acknowledgement, at most `produce_timeout_ms`."""
    futures = await send_in_batches(
        producer,
        ((settings.topic(output.topic), output.key.encode(), encode(output.event)) for output in outputs),
    )
    if futures:
        await asyncio.wait_for(asyncio.gather(*futures), timeout=settings.produce_timeout_ms / 1000)


def rewind(consumer: AIOKafkaConsumer, batch: dict[TopicPartition, list[Any]]) -> None:
    """Seek back to the batch start so a fenced batch is never skipped."""
    for tp, records in batch.items():
        # No longer assigned: its new owner resumes from the commit.
        try:
            consumer.seek(tp, records[0].offset)
        except IllegalStateError:
            continue
