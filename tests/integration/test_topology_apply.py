"""`apply` creates every topic once, with the declared partitions and configs, and finds drift."""

from __future__ import annotations

import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from paystream.settings import load_settings
from topology.apply import apply_topology
from topology.topics import PAYMENTS_CLEARED, TOPICS

pytestmark = pytest.mark.integration


async def test_apply_is_idempotent_and_reports_drift() -> None:
    settings = load_settings().with_overrides(namespace=f"topo{uuid.uuid4().hex[:8]}.")
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        # A topic created by hand with fewer partitions than declared.
        await admin.create_topics([NewTopic(settings.topic(PAYMENTS_CLEARED), 2, 1)])
        first = await apply_topology(settings)
        second = await apply_topology(settings)
        described = await admin.describe_topics([settings.topic(t.name) for t in TOPICS])
    finally:
        await admin.close()
    assert sorted(first.created) == sorted(settings.topic(t.name) for t in TOPICS if t.name != PAYMENTS_CLEARED)
    assert second.created == []
    assert list(second.drift) == [settings.topic(PAYMENTS_CLEARED)]
    # Created by hand: too few partitions, and the broker's default max.message.bytes, not the declared one.
    assert second.drift[settings.topic(PAYMENTS_CLEARED)] == [
        "partitions: expected 8, found 2",
        "max.message.bytes: expected 1048576, found 1048588",
    ]
    partitions = {d["topic"]: len(d["partitions"]) for d in described}
    for topic in TOPICS:
        if topic.name != PAYMENTS_CLEARED:
            assert partitions[settings.topic(topic.name)] == topic.partitions
