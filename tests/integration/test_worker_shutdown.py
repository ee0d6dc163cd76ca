"""SIGTERM: a worker finishes the batch in flight, commits, and exits 0; Kafka and PostgreSQL agree."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any, NoReturn

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

FIRST = 3_000  # published before the worker starts
STARTED = 200  # decisions before the stop: mid-stream
MORE = 500  # published while the worker is stopped, so input is left whatever its speed
BATCH = 50
# Generous bounds for waits that must end: reaching one fails the test with the worker's output.
STARTED_WAIT_S_MAX = 180.0
EXIT_WAIT_S_MAX = 120.0


@pytest.fixture(scope="module")
async def environment() -> AsyncIterator[Settings]:
    settings = await fresh_environment("term")
    yield settings
    await drop_database(settings)


async def _decided(connection: Any) -> int:
    return int(await connection.fetchval("SELECT count(*) FROM risk_decisions"))


async def _fail(process: asyncio.subprocess.Process, output: asyncio.Task[bytes], why: str) -> NoReturn:
    if process.returncode is None:
        process.kill()
    await process.wait()
    raise AssertionError(f"{why}; worker output:\n{(await output).decode(errors='replace')[-3000:]}")


async def test_sigterm_commits_the_batch_in_flight_and_exits_zero(environment: Settings) -> None:
    prefix = environment.namespace.rstrip(".")
    await publish(environment, generate(FIRST, prefix, seed=51))
    # A session timeout far above the few milliseconds the worker is stopped below: it keeps its partitions.
    worker_settings = environment.with_overrides(batch_records_max=BATCH, kafka_session_timeout_ms=45_000)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "paystream.cli.main", "worker", "risk",
        env=settings_environment(worker_settings), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    output = asyncio.create_task(process.stdout.read())  # read all along: a full pipe would block the worker
    connection = await connect(environment)
    try:
        # Some decided: wait for it however slow the machine is, and say so if it never happens.
        deadline = time.monotonic() + STARTED_WAIT_S_MAX
        while (decided := await _decided(connection)) < STARTED:
            if process.returncode is not None:
                await _fail(process, output, f"the worker exited ({process.returncode}) after {decided} decisions")
            if time.monotonic() > deadline:
                await _fail(process, output, f"only {decided} of {STARTED} decisions after {STARTED_WAIT_S_MAX:.0f} s")
            await asyncio.sleep(0.1)
        # Most not yet, whatever the worker did meanwhile: stopped, it cannot go on, and more input arrives.
        process.send_signal(signal.SIGSTOP)
        at_stop = await _decided(connection)
        await publish(environment, generate(MORE, f"{prefix}-more", seed=52))
        process.send_signal(signal.SIGTERM)  # pending until it runs again: the first thing it sees
        process.send_signal(signal.SIGCONT)
        try:
            await asyncio.wait_for(process.wait(), EXIT_WAIT_S_MAX)
        except TimeoutError:
            await _fail(process, output, f"no exit {EXIT_WAIT_S_MAX:.0f} s after SIGTERM")
        decided = await _decided(connection)
        database_offsets = {
            row["partition"]: row["next_offset"]
            for row in await connection.fetch(
                "SELECT partition, next_offset FROM stage_offsets WHERE group_id = $1", environment.group("risk")
            )
        }
    finally:
        await connection.close()
    text = (await output).decode(errors="replace")
    assert process.returncode == 0, text[-2000:]
    assert "stage stopped" in text
    # It finished what it had in flight (at most a batch being applied and one being fetched), then
    # stopped with input left: the MORE published while it was stopped are more than two batches.
    assert STARTED <= at_stop <= decided <= at_stop + 2 * BATCH, (at_stop, decided)
    assert decided < FIRST + MORE

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
    # Each record up to those offsets has its one decision, and none beyond (no invalid records here).
    assert sum(processed.values()) == decided
