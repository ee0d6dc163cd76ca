"""`topology apply` and `message.timestamp.type`: payments.requested is stamped by the broker.

The event-time window measures `created_at` against the record's timestamp, so
the topic must carry LogAppendTime: created so, a topic with CreateTime is drift
and `--fix` sets it, and a record produced with an old timestamp is read back
with the broker's time. Each test uses its own namespace and deletes its topics.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from paystream.settings import Settings, load_settings
from topology.apply import apply_topology
from topology.topics import PAYMENTS_CLEARED, PAYMENTS_REQUESTED, TOPICS

pytestmark = pytest.mark.integration

LOG_APPEND_TIME = 1  # aiokafka's ConsumerRecord.timestamp_type for LogAppendTime


@pytest.fixture
async def settings() -> AsyncIterator[Settings]:
    isolated = load_settings().with_overrides(namespace=f"tsty{uuid.uuid4().hex[:8]}.")
    yield isolated
    admin = await _admin(isolated)
    try:
        ours = [t for t in await admin.list_topics() if t.startswith(isolated.namespace)]
        if ours:
            await admin.delete_topics(ours)
    finally:
        await admin.close()


async def _admin(settings: Settings) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=15_000)
    await admin.start()
    return admin


async def _timestamp_types(settings: Settings) -> dict[str, str]:
    admin = await _admin(settings)
    try:
        resources = [
            ConfigResource(ConfigResourceType.TOPIC, settings.topic(t.name), {"message.timestamp.type": None})
            for t in TOPICS
        ]
        found: dict[str, str] = {}
        for response in await admin.describe_configs(resources):
            for _code, _message, _type, name, entries in response.resources:
                (value,) = [entry[1] for entry in entries if entry[0] == "message.timestamp.type"]
                found[name.removeprefix(settings.namespace)] = value
        return found
    finally:
        await admin.close()


async def test_apply_creates_payment_requests_with_log_append_time(settings: Settings) -> None:
    report = await apply_topology(settings)

    assert not report.drift_remains
    types = await _timestamp_types(settings)
    assert types == {t.name: t.timestamp_type for t in TOPICS}
    assert types[PAYMENTS_REQUESTED] == "LogAppendTime"

    # The broker's clock wins: a record sent with a timestamp a day old is read back stamped now.
    topic = settings.topic(PAYMENTS_REQUESTED)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        day_ago_ms = int(time.time() * 1000) - 86_400_000
        sent = await producer.send_and_wait(topic, b"{}", key=b"k", partition=0, timestamp_ms=day_ago_ms)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, sent.offset)
        record = await consumer.getone()
    finally:
        await consumer.stop()
    assert record.timestamp_type == LOG_APPEND_TIME
    assert abs(record.timestamp - time.time() * 1000) < 60_000, record.timestamp


async def test_a_topic_with_create_time_is_drift_until_fixed(settings: Settings) -> None:
    requested = settings.topic(PAYMENTS_REQUESTED)
    admin = await _admin(settings)
    try:
        # Created by hand as a broker would by default: every declared config but the timestamp type.
        spec = next(t for t in TOPICS if t.name == PAYMENTS_REQUESTED)
        configs = {"retention.ms": str(spec.retention_ms), "max.message.bytes": str(spec.max_message_bytes)}
        response = await admin.create_topics([NewTopic(requested, spec.partitions, 1, topic_configs=configs)])
        assert all(code == 0 for _name, code, *_ in response.topic_errors), response.topic_errors
    finally:
        await admin.close()

    found = await apply_topology(settings)
    by_topic = {r.topic: r for r in found.topics}
    assert [str(d) for d in by_topic[requested].drift] == [
        "message.timestamp.type: expected LogAppendTime, found CreateTime"
    ]
    assert by_topic[requested].status == "drift"

    fixed = await apply_topology(settings, fix=True)
    by_topic = {r.topic: r for r in fixed.topics}
    assert by_topic[requested].status == "fixed"
    assert [(d.field, d.actual, d.expected) for d in by_topic[requested].fixed] == [
        ("message.timestamp.type", "CreateTime", "LogAppendTime")
    ]
    types = await _timestamp_types(settings)
    assert (types[PAYMENTS_REQUESTED], types[PAYMENTS_CLEARED]) == ("LogAppendTime", "CreateTime")
    assert all(r.status == "ok" for r in (await apply_topology(settings)).topics)
