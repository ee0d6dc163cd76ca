"""Thin aiokafka adapters: every option that matters for money is passed explicitly."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from paystream.settings import Settings

CLIENT_REQUEST_TIMEOUT_MS = 30_000


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
