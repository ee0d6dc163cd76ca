"""Waiting until a freshly created topic can be consumed by a group.

A group member that subscribes while its topic is not yet in the broker's
metadata (created a moment ago, partitions without a leader) is assigned no
partitions, and aiokafka looks again only after `metadata.max.age.ms` (5
minutes by default). Tests that start a subscribed loop right after creating
their topics wait for every partition to have a leader first.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from paystream.settings import Settings
from topology.topics import topic_spec

READY_WAIT_S = 60.0


async def wait_partitions_led(settings: Settings, name: str, wait_s: float = READY_WAIT_S) -> None:
    """Until the namespaced topic `name` shows all its declared partitions, each with a leader."""
    topic = settings.topic(name)
    expected = topic_spec(name).partitions
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=30_000)
    await admin.start()
    try:
        deadline = time.monotonic() + wait_s
        seen: Any = None
        while True:
            seen = (await admin.describe_topics([topic]))[0]
            leaders = [p["leader"] for p in seen["partitions"]]
            if seen["error_code"] == 0 and len(leaders) == expected and all(leader >= 0 for leader in leaders):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: not every partition led within {wait_s:.0f} s: {seen}")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
