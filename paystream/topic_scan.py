"""Read a whole topic from its beginning to its current end, outside any consumer group.

For checks and tests: what exactly is on a topic, including re-delivered duplicates.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from paystream.settings import Settings

POLL_TIMEOUT_MS = 1_000
EMPTY_POLLS_MAX = 30


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The topic's partitions, fetching metadata first if this client has not seen the topic yet."""
    partitions = consumer.partitions_for_topic(topic)
    if partitions is None:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in sorted(partitions)]


async def read_topic(settings: Settings, topic: str) -> list[Any]:
    """Every record of `topic` (a namespaced name) up to the end offsets seen at the start."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, topic)
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[Any] = []
        empty_polls = 0
        while await _behind(consumer, tps, ends):
            batch = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS)
            if not batch:
                empty_polls += 1
                if empty_polls > EMPTY_POLLS_MAX:
                    raise TimeoutError(f"topic {topic} stopped short of its end offsets {ends}")
                continue
            empty_polls = 0
            for tp_records in batch.values():
                records.extend(tp_records)
        return records
    finally:
        await consumer.stop()


async def _behind(consumer: AIOKafkaConsumer, tps: list[TopicPartition], ends: dict[TopicPartition, int]) -> bool:
    for tp in tps:
        if await consumer.position(tp) < ends[tp]:
            return True
    return False
