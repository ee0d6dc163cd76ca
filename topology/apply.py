"""Create the declared topics and verify existing ones, idempotently."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from paystream.errors import ServiceUnavailableError
from paystream.settings import Settings
from topology.topics import PROFILES, TOPICS, TopologyProfile, topic_config

CONNECT_TIMEOUT_S = 15.0


@dataclass
class ApplyReport:
    created: list[str] = field(default_factory=list)
    ok: list[str] = field(default_factory=list)
    # topic -> list of "field: expected X, found Y"
    drift: dict[str, list[str]] = field(default_factory=dict)


async def _admin(settings: Settings) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=15_000)
    try:
        await asyncio.wait_for(admin.start(), CONNECT_TIMEOUT_S)
    except (TimeoutError, KafkaConnectionError, KafkaError, OSError) as error:
        await admin.close()
        raise ServiceUnavailableError(
            f"cannot reach Kafka at {settings.kafka_bootstrap}: {error or type(error).__name__}"
            " (is the stack up? try: paystream stack up)"
        ) from error
    return admin


async def apply_topology(settings: Settings, profile: TopologyProfile | None = None) -> ApplyReport:
    profile = profile or PROFILES["local"]
    report = ApplyReport()
    admin = await _admin(settings)
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in TOPICS if settings.topic(spec.name) not in existing]
        if missing:
            # Another process may create them between our list and our create.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [
                        NewTopic(
                            settings.topic(spec.name),
                            spec.partitions,
                            profile.replication_factor,
                            topic_configs=topic_config(spec, profile),
                        )
                        for spec in missing
                    ]
                )
            report.created = [settings.topic(spec.name) for spec in missing]
        described = await admin.describe_topics([settings.topic(spec.name) for spec in TOPICS])
        partitions = {d["topic"]: len(d["partitions"]) for d in described}
        for spec in TOPICS:
            name = settings.topic(spec.name)
            if name in report.created:
                continue
            found = partitions.get(name, 0)
            if found != spec.partitions:
                report.drift.setdefault(name, []).append(f"partitions: expected {spec.partitions}, found {found}")
            else:
                report.ok.append(name)
    finally:
        await admin.close()
    return report
