"""Read a status snapshot from the broker and PostgreSQL; opened once, read as often as `--watch` asks.

Broker: the group coordinator's description of each stage's group (members,
their client ids, hosts and assigned partitions), the group's committed
offsets, and each partition's log start and end (read_committed, as the
stages read). PostgreSQL: each partition's `stage_offsets` row and the dead
letters of the last hour. Nothing here writes anything, joins a group or
commits an offset, so status is safe against a running pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import KafkaError, for_code

from paystream.cli.reach import KAFKA_REACH_S, kafka_unreachable, require_topics
from paystream.db.pool import connect, redacted
from paystream.errors import PaystreamError, ServiceUnavailableError
from paystream.logging import quiet_client_logs
from paystream.settings import Settings
from paystream.status.model import Member, OffsetRow, Snapshot, StageStatus, stage_status
from topology.graph import MONEY_STAGES

DEAD_LETTER_HOURS = 1
_UNKNOWN_TOPIC = 3  # Kafka's UNKNOWN_TOPIC_OR_PARTITION


class StatusReader:
    """`async with StatusReader(settings) as reader: await reader.snapshot()`; each stage of the graph, in order."""

    def __init__(self, settings: Settings, stages: Sequence[str] | None = None) -> None:
        self.settings = settings
        self.stages = [s for s in MONEY_STAGES if stages is None or s.name in stages]
        self.topics = {s.name: settings.topic(s.consumes[0]) for s in self.stages}
        self.groups = {s.name: settings.group(s.name) for s in self.stages}
        self.connection: Any = None
        self.admin: AIOKafkaAdminClient | None = None
        self.consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> StatusReader:
        self.connection = await connect(self.settings, migrated=True)
        try:
            # One bounded attempt first: a missing broker is one line in seconds, a missing topic says the fix.
            await require_topics(self.settings, [s.consumes[0] for s in self.stages])
            timeout_ms = int(KAFKA_REACH_S * 1000)
            self.admin = AIOKafkaAdminClient(
                bootstrap_servers=self.settings.kafka_bootstrap,
                client_id="paystream-status",
                request_timeout_ms=timeout_ms,
            )
            # No group: it only asks for log starts and ends, and never shows up as a member.
            self.consumer = AIOKafkaConsumer(
                bootstrap_servers=self.settings.kafka_bootstrap,
                client_id="paystream-status",
                group_id=None,
                enable_auto_commit=False,
                isolation_level="read_committed",
                request_timeout_ms=timeout_ms,
            )
            with quiet_client_logs():
                await self.admin.start()
                await self.consumer.start()
        except (KafkaError, OSError, TimeoutError) as error:
            await self._close()
            raise kafka_unreachable(self.settings, error) from error
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        with quiet_client_logs():
            if self.consumer is not None:
                await self.consumer.stop()
            if self.admin is not None:
                await self.admin.close()
        if self.connection is not None:
            await self.connection.close()

    async def snapshot(self) -> Snapshot:
        """Both sources, read one after the other; an outage in between is one clear line."""
        try:
            now, rows, dead = await self._database()
        except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError, TimeoutError) as error:
            where = redacted(self.settings.database_url)
            raise ServiceUnavailableError(f"lost PostgreSQL at {where}: {type(error).__name__}: {error}") from error
        try:
            with quiet_client_logs():
                return Snapshot(now, tuple([await self._stage(s.name, now, rows, dead) for s in self.stages]))
        except (KafkaError, OSError, TimeoutError) as error:
            raise kafka_unreachable(self.settings, error) from error

    async def _database(self) -> tuple[datetime, dict[tuple[str, int], OffsetRow], dict[str, int]]:
        async with self.connection.transaction(isolation="repeatable_read", readonly=True):
            now = await self.connection.fetchval("SELECT now()")
            offset_rows = await self.connection.fetch(
                """SELECT o.group_id, o.partition, o.next_offset, o.last_batch_at, o.window_offset, o.window_started_at
                   FROM stage_offsets o JOIN unnest($1::text[], $2::text[]) AS g(group_id, topic)
                        USING (group_id, topic)""",
                list(self.groups.values()),
                [self.topics[stage] for stage in self.groups],
            )
            dead_rows = await self.connection.fetch(
                """SELECT stage, count(*) AS dead_letters FROM dead_letters
                   WHERE stage = ANY($1::text[]) AND received_at > now() - make_interval(hours => $2)
                   GROUP BY stage""",
                [s.name for s in self.stages],
                DEAD_LETTER_HOURS,
            )
        rows = {
            (r["group_id"], r["partition"]): OffsetRow(
                r["partition"], r["next_offset"], r["last_batch_at"], r["window_offset"], r["window_started_at"]
            )
            for r in offset_rows
        }
        return now, rows, {r["stage"]: r["dead_letters"] for r in dead_rows}

    async def _stage(
        self, stage: str, now: datetime, rows: dict[tuple[str, int], OffsetRow], dead: dict[str, int]
    ) -> StageStatus:
        assert self.admin is not None and self.consumer is not None, "used outside `async with`"
        topic, group = self.topics[stage], self.groups[stage]
        tps = [TopicPartition(topic, p) for p in await self._partitions(topic)]
        state, members = await self._group(group, topic)
        committed = await self.admin.list_consumer_group_offsets(group, partitions=tps)
        beginnings = await self.consumer.beginning_offsets(tps)
        ends = await self.consumer.end_offsets(tps)
        return stage_status(
            stage=stage,
            group_id=group,
            topic=topic,
            group_state=state,
            members=members,
            partitions=[tp.partition for tp in tps],
            committed={tp.partition: c.offset for tp, c in committed.items() if c.offset >= 0},
            beginnings={tp.partition: offset for tp, offset in beginnings.items()},
            ends={tp.partition: offset for tp, offset in ends.items()},
            rows={p: row for (g, p), row in rows.items() if g == group},
            dead_letters_last_hour=dead.get(stage, 0),
            now=now,
        )

    async def _partitions(self, topic: str) -> list[int]:
        assert self.admin is not None
        (described,) = await self.admin.describe_topics([topic])
        if described["error_code"] == _UNKNOWN_TOPIC:
            raise PaystreamError(
                f"topic {topic} does not exist on {self.settings.kafka_bootstrap}: create the topics with"
                " `paystream topology apply`"
            )
        if described["error_code"]:
            raise for_code(described["error_code"])(f"describing topic {topic}")
        return sorted(p["partition"] for p in described["partitions"])

    async def _group(self, group: str, topic: str) -> tuple[str, list[Member]]:
        """The group's state and members; a group that never existed is `Dead` with none."""
        assert self.admin is not None
        responses = await self.admin.describe_consumer_groups([group])
        described = [g for response in responses for g in response.to_object()["groups"] if g["group"] == group]
        if not described:
            return "Dead", []
        (found,) = described
        if found["error_code"]:
            raise for_code(found["error_code"])(f"describing group {group}")
        return found["state"], [_member(m, topic) for m in found["members"]]


def _member(described: dict[str, Any], topic: str) -> Member:
    """A member with its partitions of `topic` (none while a rebalance has not assigned them yet)."""
    raw = described["member_assignment"]
    partitions: list[int] = []
    if raw:
        assignment = ConsumerProtocolMemberAssignment.decode(raw)
        partitions = sorted(p for t, ps in assignment.assignment if t == topic for p in ps)
    return Member(
        member_id=described["member_id"],
        client_id=described["client_id"],
        host=described["client_host"].lstrip("/"),
        partitions=tuple(partitions),
    )
