"""The pass-through ceiling: four Kafka hops in Python, with no database work.

Each hop is the stage loop without Step 2: take a batch, produce every record
unchanged to the next topic (same producer settings, one batch per
partition), wait for the acknowledgements, commit. What paystream would reach
if PostgreSQL and the stages' decisions cost nothing.
"""

from __future__ import annotations

import asyncio

from paystream.kafka import make_consumer, make_producer, send_in_batches
from paystream.settings import Settings
from topology.topics import FUNDS_HELD, PAYMENTS_APPROVED, PAYMENTS_CLEARED, PAYMENTS_OUTCOMES, PAYMENTS_REQUESTED

# The pipeline's own topics, so every system reads the same input and is observed on the same output.
HOPS = {
    "risk": (PAYMENTS_REQUESTED, PAYMENTS_APPROVED),
    "funds": (PAYMENTS_APPROVED, FUNDS_HELD),
    "clearing": (FUNDS_HELD, PAYMENTS_CLEARED),
    "settlement": (PAYMENTS_CLEARED, PAYMENTS_OUTCOMES),
}


async def run_passthrough_hop(settings: Settings, hop: str, stop: asyncio.Event) -> int:
    """Copy records from the hop's input to its output, batch by batch, until `stop`."""
    source, target = (settings.topic(name) for name in HOPS[hop])
    consumer = make_consumer(settings, settings.group(f"passthrough.{hop}"), f"passthrough-{hop}")
    producer = make_producer(settings, f"passthrough-{hop}")
    copied = 0
    await producer.start()
    await consumer.start()
    try:
        consumer.subscribe([source])
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=settings.batch_wait_ms, max_records=settings.batch_records_max)
            if not batch:
                continue
            futures = await send_in_batches(
                producer, ((target, r.key, r.value) for records in batch.values() for r in records)
            )
            await asyncio.wait_for(asyncio.gather(*futures), settings.produce_timeout_ms / 1000)
            await consumer.commit({tp: records[-1].offset + 1 for tp, records in batch.items()})
            copied += sum(len(records) for records in batch.values())
    finally:
        await consumer.stop()
        await producer.stop()
    return copied
