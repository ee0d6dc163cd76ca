"""`topology apply` on the real broker: creates once, verifies, reports drift, fixes what it can.

Each test uses its own topic namespace and deletes its topics at the end.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from paystream.cli.main import main
from paystream.errors import ServiceUnavailableError
from paystream.settings import Settings, load_settings
from topology import apply as apply_module
from topology.apply import TopologyError, apply_topology, describe_topology
from topology.topics import DEAD_LETTER, PAYMENTS_CLEARED, PROFILES, TOPICS

pytestmark = pytest.mark.integration

# Generous bounds for waits that must end: reaching them is a failure, never a measurement.
HANG_GUARD_S = 120.0
METADATA_WAIT_S_MAX = 60.0


async def _admin(settings: Settings) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=15_000)
    await admin.start()
    return admin


@pytest.fixture
async def settings() -> AsyncIterator[Settings]:
    """Settings with a fresh namespace; every topic in it is deleted afterwards."""
    isolated = load_settings().with_overrides(namespace=f"topo{uuid.uuid4().hex[:8]}.")
    yield isolated
    await _delete_namespace(isolated)


async def _create_by_hand(settings: Settings, topics: list[NewTopic]) -> None:
    admin = await _admin(settings)
    try:
        response = await admin.create_topics(topics)
        assert all(code == 0 for _name, code, *_ in response.topic_errors), response.topic_errors
    finally:
        await admin.close()


async def _topic_configs(settings: Settings, name: str) -> dict[str, str]:
    admin = await _admin(settings)
    try:
        (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    finally:
        await admin.close()
    return {entry[0]: entry[1] for entry in response.resources[0][4]}


def _all(settings: Settings) -> list[str]:
    return [settings.topic(t.name) for t in TOPICS]


async def test_apply_creates_every_topic_once_then_finds_them_ok(settings: Settings) -> None:
    first = await apply_topology(settings)
    second = await apply_topology(settings)

    assert first.names("created") == _all(settings)
    assert second.names("ok") == _all(settings)
    assert not first.drift_remains and not second.drift_remains
    for result in second.topics:
        assert result.live.partitions == result.spec.partitions
        assert result.live.replication_factor == 1
    live = await describe_topology(settings)
    assert [r.status for r in live.topics] == ["ok"] * len(TOPICS)


async def test_drift_is_reported_per_field_then_fixed_keeping_other_overrides(settings: Settings) -> None:
    cleared, dead_letter = settings.topic(PAYMENTS_CLEARED), settings.topic(DEAD_LETTER)
    # By hand: too few partitions and Kafka's default max.message.bytes, plus an override we do not declare;
    # and a dead-letter topic with more partitions than declared, which Kafka cannot undo.
    await _create_by_hand(
        settings,
        [NewTopic(cleared, 2, 1, topic_configs={"segment.ms": "3600000"}), NewTopic(dead_letter, 3, 1)],
    )

    found = await apply_topology(settings)
    by_topic = {r.topic: r for r in found.topics}
    assert found.names("created") == [t for t in _all(settings) if t not in (cleared, dead_letter)]
    assert [str(d) for d in by_topic[cleared].drift] == [
        "partitions: expected 8, found 2 (--fix adds partitions)",
        "max.message.bytes: expected 1048576, found 1048588",
    ]
    assert [(d.field, d.fixable) for d in by_topic[dead_letter].drift] == [
        ("partitions", False),
        ("retention.ms", True),  # 30 days declared, Kafka's default is 7
        ("max.message.bytes", True),
    ]

    fixed = await apply_topology(settings, fix=True)
    by_topic = {r.topic: r for r in fixed.topics}
    assert by_topic[cleared].status == "fixed"
    assert [(d.field, d.actual, d.expected) for d in by_topic[cleared].fixed] == [
        ("partitions", "2", "8"),
        ("max.message.bytes", "1048588", "1048576"),
    ]
    assert by_topic[dead_letter].status == "drift"
    assert [str(d) for d in by_topic[dead_letter].drift] == [
        "partitions: expected 2, found 3 (Kafka cannot remove partitions)"
    ]
    assert [d.field for d in by_topic[dead_letter].fixed] == ["retention.ms", "max.message.bytes"]
    configs = await _topic_configs(settings, cleared)
    assert configs["segment.ms"] == "3600000", "an override we do not declare survives --fix"
    assert configs["max.message.bytes"] == "1048576"

    again = await apply_topology(settings)
    assert [r.topic for r in again.topics if r.status != "ok"] == [dead_letter]


async def test_two_applies_at_once_create_each_topic_once_without_error(settings: Settings) -> None:
    one, two = await asyncio.gather(apply_topology(settings), apply_topology(settings))

    assert sorted(one.names("created") + two.names("created")) == sorted(_all(settings))
    assert not one.drift_remains and not two.drift_remains


async def test_production_profile_on_one_broker_fails_with_the_brokers_reason(settings: Settings) -> None:
    with pytest.raises(TopologyError, match="InvalidReplicationFactorError") as raised:
        await apply_topology(settings, PROFILES["production"])
    assert "\n" not in str(raised.value)
    live = await describe_topology(settings)
    assert {r.status for r in live.topics} == {"missing"}


async def test_production_fix_on_one_replica_never_raises_min_isr_above_it(settings: Settings) -> None:
    await apply_topology(settings)
    report = await apply_topology(settings, PROFILES["production"], fix=True)

    assert report.drift_remains
    assert all(
        not r.fixed and {d.field for d in r.drift} == {"replication", "min.insync.replicas"} for r in report.topics
    )
    configs = await _topic_configs(settings, settings.topic(PAYMENTS_CLEARED))
    assert configs["min.insync.replicas"] == "1", "the topic still accepts acks=all writes"


class _CountedAdmin(AIOKafkaAdminClient):  # type: ignore[misc]  # aiokafka is untyped
    """The admin client `apply_topology` makes, recorded with whether it was closed."""

    made: list[_CountedAdmin] = []

    def __init__(self, **configs: Any) -> None:
        super().__init__(**configs)
        self.closed = False
        _CountedAdmin.made.append(self)

    async def close(self) -> None:
        self.closed = True
        await super().close()


async def test_an_unreachable_broker_is_one_line_after_a_bounded_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apply_module, "BROKER_WAIT_S_MAX", 1.0)
    monkeypatch.setattr(apply_module, "AIOKafkaAdminClient", _CountedAdmin)
    monkeypatch.setattr(_CountedAdmin, "made", [])
    nowhere = load_settings().with_overrides(kafka_bootstrap="127.0.0.1:1")
    # The outer bound only keeps a wait that never ends from hanging the suite; it is not what is checked.
    with pytest.raises(ServiceUnavailableError) as raised:
        await asyncio.wait_for(apply_topology(nowhere), HANG_GUARD_S)
    message = str(raised.value)
    assert message.startswith("cannot reach Kafka at 127.0.0.1:1 within 1 s (")
    assert message.endswith("); is the stack up? try: paystream stack up")
    assert "\n" not in message
    assert isinstance(raised.value.__cause__, KafkaError | TimeoutError | OSError), repr(raised.value.__cause__)
    # It tried, gave up, and left no client behind: every attempt's client was closed.
    assert _CountedAdmin.made
    assert all(admin.closed for admin in _CountedAdmin.made)


def test_the_command_prints_one_line_per_topic_and_exits_1_on_drift(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace = f"topo{uuid.uuid4().hex[:8]}."
    monkeypatch.setenv("PAYSTREAM_NAMESPACE", namespace)
    isolated = load_settings()
    dead_letter = isolated.topic(DEAD_LETTER)
    try:
        assert main(["topology", "apply"]) == 0
        created = capsys.readouterr().out.splitlines()
        assert created == [f"created  {name}" for name in _all(isolated)]
        asyncio.run(_add_partitions(isolated, dead_letter, 3))
        assert main(["topology", "apply", "--fix"]) == 1
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == len(TOPICS)
        assert f"drift    {dead_letter}: partitions: expected 2, found 3 (Kafka cannot remove partitions)" in lines
        assert main(["topology", "show", "--live"]) == 0
        assert "drift: partitions: expected 2, found 3" in capsys.readouterr().out
    finally:
        asyncio.run(_delete_namespace(isolated))


async def _add_partitions(settings: Settings, name: str, total: int) -> None:
    """Grow a topic and wait until the broker's metadata shows it.

    The controller accepts CreatePartitions before the broker's metadata cache
    has the new partitions; without the wait, the next read races the change.
    """
    admin = await _admin(settings)
    try:
        await admin.create_partitions({name: NewPartitions(total)})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + METADATA_WAIT_S_MAX
        while True:
            (described,) = await admin.describe_topics([name])
            if len(described["partitions"]) == total:
                return
            if loop.time() > deadline:
                raise AssertionError(
                    f"{name} shows {len(described['partitions'])} partitions, not {total},"
                    f" {METADATA_WAIT_S_MAX:.0f} s after CreatePartitions was accepted"
                )
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def _delete_namespace(settings: Settings) -> None:
    admin = await _admin(settings)
    try:
        ours = [t for t in await admin.list_topics() if t.startswith(settings.namespace)]
        if ours:
            await admin.delete_topics(ours)
    finally:
        await admin.close()
