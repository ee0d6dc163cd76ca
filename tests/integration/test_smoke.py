"""The services are the real ones: a Kafka 4 broker and a PostgreSQL server, not stand-ins."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from paystream.settings import load_settings

pytestmark = pytest.mark.integration


async def test_kafka_round_trip_with_idempotent_producer_and_manual_commit() -> None:
    settings = load_settings()
    topic = f"smoke-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        assert cluster["brokers"], cluster
        await admin.create_topics([NewTopic(topic, 1, 1)])
        # Kafka 4 removed old protocol versions (KIP-896): a real 4.x broker's
        # ApiVersions answer starts Fetch (API key 1) at v4; 3.x brokers at v0.
        connection = next(iter(admin._client._conns.values()))
        fetch_min = connection._versions[1][0]
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for i in range(5):
            await producer.send_and_wait(topic, f"value-{i}".encode(), key=b"k")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"smoke-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        received: list[bytes] = []
        while len(received) < 5:
            batch = await consumer.getmany(timeout_ms=5_000)
            assert batch, "no records within 5 s"
            received += [r.value for records in batch.values() for r in records]
        await consumer.commit()
        committed = await consumer.committed(TopicPartition(topic, 0))
    finally:
        await consumer.stop()
    assert received == [f"value-{i}".encode() for i in range(5)]
    assert committed == 5
    assert fetch_min >= 4, f"broker still accepts Fetch v{fetch_min}: not a Kafka 4.x broker"


async def test_postgres_round_trip() -> None:
    settings = load_settings()
    connection = await asyncpg.connect(settings.database_url)
    try:
        version = await connection.fetchval("SELECT version()")
        major = int((await connection.fetchval("SHOW server_version")).split(".")[0])
        table = f"smoke_{uuid.uuid4().hex[:8]}"
        await connection.execute(f"CREATE TEMP TABLE {table} (id int PRIMARY KEY, amount_minor bigint)")
        await connection.execute(f"INSERT INTO {table} VALUES (1, 9223372036854775807)")
        value = await connection.fetchval(f"SELECT amount_minor FROM {table} WHERE id = 1")
    finally:
        await connection.close()
    assert "PostgreSQL" in version
    assert major >= 13
    assert value == 2**63 - 1
