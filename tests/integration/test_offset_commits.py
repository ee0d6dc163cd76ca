"""Kafka offset commits off the batch's path (`paystream.stage.commits`), on the real broker and server.

A running stage commits at most every `offset_commit_interval_ms`, in the
background; when it stops, and before its partitions are revoked, it commits
everything whose events were produced, so the next owner replays nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from paystream.db.pool import connect, create_pool
from paystream.prepare import drop_database
from paystream.settings import Settings
from paystream.stage.loop import StageLoop
from paystream.topic_scan import topic_partitions
from tests.support.pipeline import fresh_environment, generate, publish
from topology.topics import PAYMENTS_REQUESTED
from workers import build_stage

pytestmark = pytest.mark.integration

PAYMENTS = 600
BATCH = 50
# Far longer than a test run: after the first batch's commit, none starts before the loop stops.
DEFERRED_MS = 60_000
WAIT_S_MAX = 120.0


@pytest.fixture
async def environment() -> AsyncIterator[Settings]:
    settings = await fresh_environment("commits")
    yield settings
    await drop_database(settings)


async def _processed(settings: Settings) -> int:
    """Records the risk stage has stored, by its offset rows in PostgreSQL."""
    connection = await connect(settings)
    try:
        value = await connection.fetchval(
            "SELECT coalesce(sum(next_offset), 0) FROM stage_offsets WHERE group_id = $1 AND next_offset > 0",
            settings.group("risk"),
        )
    finally:
        await connection.close()
    return int(value)


async def _committed(settings: Settings) -> int:
    """Records before Kafka's committed offsets of the risk group, summed over the partitions."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=settings.group("risk"))
    await consumer.start()
    try:
        partitions = await topic_partitions(consumer, settings.topic(PAYMENTS_REQUESTED))
        return sum([await consumer.committed(tp) or 0 for tp in partitions])
    finally:
        await consumer.stop()


async def _until_processed(settings: Settings, count: int) -> None:
    deadline = time.monotonic() + WAIT_S_MAX
    while await _processed(settings) < count:
        assert time.monotonic() < deadline, f"risk stored {await _processed(settings)} of {count} records"
        await asyncio.sleep(0.2)


def _risk_loop(settings: Settings, pool: Any) -> StageLoop[Any]:
    return StageLoop(build_stage("risk", settings), settings, pool)


async def test_commits_are_deferred_while_running_and_complete_at_stop(environment: Settings) -> None:
    settings = environment.with_overrides(batch_records_max=BATCH, offset_commit_interval_ms=DEFERRED_MS)
    await publish(settings, generate(PAYMENTS, settings.namespace.rstrip("."), seed=61))
    pool = await create_pool(settings)
    stop = asyncio.Event()
    try:
        loop = _risk_loop(settings, pool)
        running = asyncio.create_task(loop.run(stop))
        await _until_processed(settings, PAYMENTS)
        # Everything stored and produced; Kafka holds only the commit started after the first batch.
        during = await _committed(settings)
        stop.set()
        await running
    finally:
        await pool.close()
    assert loop.stats.batches >= PAYMENTS // BATCH
    assert 0 < during <= BATCH
    assert await _committed(settings) == PAYMENTS


async def test_interval_zero_commits_every_batch_before_the_next(environment: Settings) -> None:
    settings = environment.with_overrides(batch_records_max=BATCH, offset_commit_interval_ms=0)
    await publish(settings, generate(PAYMENTS, settings.namespace.rstrip("."), seed=62))
    pool = await create_pool(settings)
    stop = asyncio.Event()
    try:
        running = asyncio.create_task(_risk_loop(settings, pool).run(stop))
        await _until_processed(settings, PAYMENTS)
        # The last batch's commit may still be in flight when its offset row is visible: wait for it.
        deadline = time.monotonic() + WAIT_S_MAX
        while (during := await _committed(settings)) < PAYMENTS:
            assert time.monotonic() < deadline, f"Kafka's offsets cover {during} of {PAYMENTS} records"
            await asyncio.sleep(0.2)
        assert not running.done()
        stop.set()
        await running
    finally:
        await pool.close()
    assert during == PAYMENTS


async def test_a_revocation_commits_what_was_deferred_so_the_next_owner_replays_nothing(
    environment: Settings,
) -> None:
    settings = environment.with_overrides(batch_records_max=BATCH, offset_commit_interval_ms=DEFERRED_MS)
    await publish(settings, generate(PAYMENTS, settings.namespace.rstrip("."), seed=63))
    pool = await create_pool(settings)
    stop = asyncio.Event()
    try:
        first = _risk_loop(settings, pool)
        first_running = asyncio.create_task(first.run(stop))
        await _until_processed(settings, PAYMENTS)
        assert await _committed(settings) <= BATCH
        # A second member joins: the first's partitions are revoked (and some handed to the second).
        second = _risk_loop(settings, pool)
        second_running = asyncio.create_task(second.run(stop))
        deadline = time.monotonic() + WAIT_S_MAX
        while not second.consumer.assignment() or second.stats.rebalances == 0:
            assert time.monotonic() < deadline, "the second member was never assigned partitions"
            await asyncio.sleep(0.2)
        # Kafka's offsets already covered everything when the second member claimed its partitions.
        committed_after_rebalance = await _committed(settings)
        stop.set()
        await asyncio.gather(first_running, second_running)
    finally:
        await pool.close()
    assert committed_after_rebalance == PAYMENTS
    assert first.stats.records == PAYMENTS
    assert second.stats.records == 0
