"""SIGTERM: a worker finishes the batch in flight, commits, and exits 0; Kafka and PostgreSQL agree."""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest
from aiokafka import AIOKafkaConsumer

from paystream.chaos.processes import settings_environment
from paystream.db.pool import connect
from paystream.prepare import drop_database
from paystream.settings import Settings
from paystream.topic_scan import topic_partitions
from tests.support.pipeline import fresh_environment, generate, publish
from topology.topics import PAYMENTS_REQUESTED

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def environment() -> Settings:
    settings = await fresh_environment("term")
    yield settings
    await drop_database(settings)


async def test_sigterm_commits_the_batch_in_flight_and_exits_zero(environment: Settings) -> None:
    await publish(environment, generate(3_000, environment.namespace.rstrip("."), seed=51))
    env = settings_environment(environment.with_overrides(batch_records_max=50))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "paystream.cli.main", "worker", "risk",
        env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    connection = await connect(environment)
    try:
        for _ in range(300):  # stop it mid-stream: some decided, most not yet
            decided = await connection.fetchval("SELECT count(*) FROM risk_decisions")
            if decided >= 200:
                break
            await asyncio.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), 60)
        decided = await connection.fetchval("SELECT count(*) FROM risk_decisions")
        database_offsets = {
            row["partition"]: row["next_offset"]
            for row in await connection.fetch(
                "SELECT partition, next_offset FROM stage_offsets WHERE group_id = $1", environment.group("risk")
            )
        }
    finally:
        await connection.close()
    assert process.returncode == 0, output.decode(errors="replace")[-2000:]
    assert b"stage stopped" in output
    assert 200 <= decided < 3_000

    consumer = AIOKafkaConsumer(bootstrap_servers=environment.kafka_bootstrap, group_id=environment.group("risk"))
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, environment.topic(PAYMENTS_REQUESTED))
        kafka_offsets = {tp.partition: await consumer.committed(tp) for tp in tps}
    finally:
        await consumer.stop()
    # Every applied batch was committed before exit: Kafka's offsets equal PostgreSQL's.
    processed = {p: o for p, o in database_offsets.items() if o >= 0}
    assert processed
    assert {p: kafka_offsets[p] for p in processed} == processed
