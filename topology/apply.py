"""Create the declared topics and verify existing ones, idempotently."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from paystream.errors import ServiceUnavailableError
from paystream.settings import Settings
from topology.topics import PROFILES, TOPICS, TopologyProfile, topic_config

CONNECT_TIMEOUT_S = 15.0


@dataclass
class ApplyReport:
    created: list[str] = field(default_factory=list)
    ok: list[str] = field(default_factory=list)
    # topic -> list of "field: expected X, found Y" (partitions, replication, configs)
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


async def _topic_configs(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, dict[str, str]]:
    """Each topic's current configs, as the broker reports them."""
    if not names:
        return {}
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name) for name in names])
    found: dict[str, dict[str, str]] = {}
    for response in responses:
        for resource in response.resources:
            # (error_code, error_message, resource_type, resource_name, [(name, value, ...), ...])
            found[resource[3]] = {entry[0]: entry[1] for entry in resource[4]}
    return found


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
        replicas = {d["topic"]: len(d["partitions"][0]["replicas"]) for d in described if d["partitions"]}
        existing_specs = [spec for spec in TOPICS if settings.topic(spec.name) not in report.created]
        configs = await _topic_configs(admin, [settings.topic(spec.name) for spec in existing_specs])
        for spec in existing_specs:
            name = settings.topic(spec.name)
            problems = []
            if partitions.get(name, 0) != spec.partitions:
                problems.append(f"partitions: expected {spec.partitions}, found {partitions.get(name, 0)}")
            if replicas.get(name, 0) != profile.replication_factor:
                problems.append(f"replication: expected {profile.replication_factor}, found {replicas.get(name, 0)}")
            for key, expected in topic_config(spec, profile).items():
                found_value = configs.get(name, {}).get(key)
                if found_value != expected:
                    problems.append(f"{key}: expected {expected}, found {found_value}")
            if problems:
                report.drift[name] = problems
            else:
                report.ok.append(name)
    finally:
        await admin.close()
    return report
