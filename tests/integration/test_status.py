"""`paystream status` run as an operator runs it (its own process, the test's namespace and database).

A backlog with no worker: lag per partition is the broker's end offset minus
the group's committed offset, the risk total is what was published, and every
stage says it has no live consumer; drained by the stages (burst mode): lag 0
everywhere, the risk stage's throughput is what its offset rows say. While a
`paystream run` process runs: its members and their partitions. `--watch`
until SIGINT. Operating errors: one line, exit 2.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from paystream.chaos.processes import settings_environment
from paystream.db.pool import connect
from paystream.prepare import create_database, drop_database, isolated_settings
from paystream.settings import REPO_ROOT, Settings, load_settings
from tests.support.pipeline import drain, fresh_environment, generate, publish
from topology.graph import MONEY_STAGES
from topology.topics import topic_spec

pytestmark = pytest.mark.integration

PAYMENTS = 40
RAW = [b"{not json"]  # one record risk dead-letters
STAGES = [s.name for s in MONEY_STAGES]
# Generous bounds for waits that must end: reaching one fails the test with what was last seen.
CLI_TIMEOUT_S = 120.0
RUN_WAIT_S = 180.0


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str


@pytest.fixture(scope="module")
async def environment() -> AsyncIterator[Settings]:
    settings = await fresh_environment("status")
    yield settings
    await drop_database(settings)


async def cli(env: dict[str, str], *argv: str) -> Ran:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "paystream.cli.main", *argv, env=env, cwd=REPO_ROOT,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


async def status_json(settings: Settings) -> dict[str, Any]:
    ran = await cli(settings_environment(settings), "status", "--json")
    assert (ran.code, ran.err) == (0, ""), ran
    data: dict[str, Any] = orjson.loads(ran.out)
    assert [s["stage"] for s in data["stages"]] == STAGES
    return data


def by_stage(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["stage"]: s for s in data["stages"]}


async def broker_offsets(settings: Settings, stage: str) -> tuple[dict[int, int], dict[int, int | None]]:
    """The input topic's end offsets and the stage group's committed offsets, asked of the broker directly."""
    declared = next(s.consumes[0] for s in MONEY_STAGES if s.name == stage)
    topic = settings.topic(declared)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=settings.group(stage), enable_auto_commit=False,
        isolation_level="read_committed",
    )  # fmt: skip
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(topic_spec(declared).partitions)]
        ends = await consumer.end_offsets(tps)
        committed = {tp.partition: await consumer.committed(tp) for tp in tps}
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}, committed


async def test_a_backlog_without_workers_then_drained(environment: Settings) -> None:
    prefix = environment.namespace.rstrip(".")
    await publish(environment, generate(PAYMENTS, prefix, seed=61), RAW)

    waiting = by_stage(await status_json(environment))
    for stage in STAGES:
        assert waiting[stage]["live_consumer"] is False
        assert waiting[stage]["members"] == []
    ends, committed = await broker_offsets(environment, "risk")
    risk = waiting["risk"]
    assert {p["partition"]: p["end_offset"] for p in risk["partitions"]} == ends
    assert {p["partition"]: p["committed_offset"] for p in risk["partitions"]} == committed
    assert {p["partition"]: p["lag"] for p in risk["partitions"]} == {p: ends[p] - (committed[p] or 0) for p in ends}
    assert risk["lag_total"] == PAYMENTS + len(RAW)
    assert (risk["last_batch_age_s"], risk["records_per_s"], risk["dead_letters_last_hour"]) == (None, 0, 0)
    not_live = await cli(settings_environment(environment), "status")
    assert not_live.code == 0
    assert not_live.out.count("no live consumer: nothing is processing") == len(STAGES)

    started = time.monotonic()
    await drain(environment)
    drained_s = time.monotonic() - started
    drained = by_stage(await status_json(environment))
    for stage in STAGES:
        ends, committed = await broker_offsets(environment, stage)
        assert {p["partition"]: p["committed_offset"] for p in drained[stage]["partitions"]} == committed
        assert [p["lag"] for p in drained[stage]["partitions"]] == [0] * len(ends), drained[stage]
        assert drained[stage]["lag_total"] == 0
    risk = drained["risk"]
    assert risk["dead_letters_last_hour"] == len(RAW)
    assert 0 <= risk["last_batch_age_s"] < 60
    # A first batch's window starts a step before it: the whole input over 60 s plus the drain, at most.
    records = PAYMENTS + len(RAW)
    assert records / (60 + drained_s + 10) <= risk["records_per_s"] <= records / 60 + 0.01 * len(risk["partitions"])
    connection = await connect(environment)
    try:
        counted = await connection.fetchval(
            "SELECT sum(next_offset - window_offset) FROM stage_offsets WHERE group_id = $1", environment.group("risk")
        )
    finally:
        await connection.close()
    assert counted == records


async def until(what: str, check: Any, wait_s: float = RUN_WAIT_S) -> Any:
    """Poll `check()` until it returns something true; fail naming `what` and the last value at the deadline."""
    deadline = time.monotonic() + wait_s
    while True:
        seen = await check()
        if seen:
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen within {wait_s:.0f} s")
        await asyncio.sleep(0.5)


async def test_a_running_pipeline_shows_its_members_and_partitions(environment: Settings) -> None:
    env = settings_environment(environment)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "paystream.cli.main", "run", env=env, cwd=REPO_ROOT,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    output = asyncio.create_task(process.stderr.read())  # read all along: a full pipe would block the run

    async def every_partition_owned() -> dict[str, dict[str, Any]] | None:
        assert process.returncode is None, (await output).decode(errors="replace")[-3000:]
        stages = by_stage(await status_json(environment))
        owned = all(s["live_consumer"] and all(p["member"] for p in s["partitions"]) for s in stages.values())
        return stages if owned else None

    try:
        stages = await until("every partition of every stage owned by a member", every_partition_owned)
        for stage in STAGES:
            members = stages[stage]["members"]
            assert len(members) == 1, members  # one process, one loop per stage
            (member,) = members
            assert member["client_id"].startswith(f"paystream-{stage}-")
            assert member["client_id"].endswith(f"-{process.pid}")
            assert member["host"]
            assert member["partitions"] == [p["partition"] for p in stages[stage]["partitions"]]
            assert {p["member"] for p in stages[stage]["partitions"]} == {member["client_id"]}
            assert stages[stage]["group_state"] == "Stable"
        table = await cli(env, "status")
        assert table.code == 0
        assert "no live consumer" not in table.out
        assert table.out.count(f"-{process.pid} on ") == len(STAGES)

        # Payments while it runs: consumed, and the risk stage's throughput is not zero.
        await publish(environment, generate(10, f"{environment.namespace}live", seed=62))

        async def risk_caught_up() -> bool:
            risk = by_stage(await status_json(environment))["risk"]
            return bool(risk["lag_total"] == 0 and risk["records_per_s"] > 0 and risk["last_batch_age_s"] < 60)

        await until("risk caught up with a throughput", risk_caught_up)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), CLI_TIMEOUT_S)
        await output
    assert code == 0

    async def nobody_left() -> bool:
        return not any(s["live_consumer"] for s in (await status_json(environment))["stages"])

    await until("every stage without a live consumer after the stop", nobody_left)


async def test_watch_refreshes_until_sigint_and_exits_zero(environment: Settings) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "paystream.cli.main", "status", "--watch", "2", env=settings_environment(environment),
        cwd=REPO_ROOT, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + CLI_TIMEOUT_S
    try:
        # Two whole refreshes: every stage's last line twice.
        while sum(line.startswith("  dead letters in the last hour") for line in lines) < 2 * len(STAGES):
            assert time.monotonic() < deadline, lines
            line = await asyncio.wait_for(process.stdout.readline(), CLI_TIMEOUT_S)
            assert line, f"status ended early: {lines} {(await process.stderr.read()).decode()}"
            lines.append(line.decode().rstrip("\n"))
        process.send_signal(signal.SIGINT)
        rest, err = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert (process.returncode, err.decode()) == (0, "")
    lines.extend(rest.decode().splitlines())
    headers = [i for i, line in enumerate(lines) if line.startswith("paystream status at ")]
    assert len(headers) == 2, lines
    # Not a terminal: the refreshes follow each other, a blank line between, each with its timestamp.
    assert headers[0] == 0 and lines[headers[1] - 1] == ""
    for stage in STAGES:
        assert sum(line.startswith(f"{stage}: ") for line in lines) == 2


def free_port() -> int:
    """A local port nothing listens on (bound once by us, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def assert_one_error_line(ran: Ran, message: str) -> None:
    assert "Traceback" not in ran.err, ran.err
    assert ran.err.splitlines() == [f"paystream: error: {message}"], ran.err
    assert (ran.out, ran.code) == ("", 2)


@pytest.mark.parametrize("argv", [["status"], ["status", "--json"], ["status", "--watch", "1"]], ids=" ".join)
async def test_no_broker_is_one_line(environment: Settings, argv: list[str]) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    ran = await cli(settings_environment(environment, {"PAYSTREAM_KAFKA_BOOTSTRAP": bootstrap}), *argv)
    assert_one_error_line(
        ran, f"cannot reach Kafka at {bootstrap}: no broker answered (is the stack up? try: paystream stack up)"
    )


async def test_no_postgresql_and_no_migrations_and_no_topics_are_one_line(environment: Settings) -> None:
    port = free_port()
    url = f"postgresql://paystream@127.0.0.1:{port}/paystream"
    ran = await cli(settings_environment(environment, {"PAYSTREAM_DATABASE_URL": url}), "status")
    assert_one_error_line(
        ran,
        f"cannot connect to PostgreSQL at {url}: [Errno 111] Connect call failed ('127.0.0.1', {port})"
        " (is the stack up? try: paystream stack up)",
    )

    empty = isolated_settings(load_settings(), f"statusnone{uuid.uuid4().hex[:8]}")
    assert await create_database(empty)
    try:
        ran = await cli(settings_environment(empty), "status", "--json")
        assert_one_error_line(ran, f"database {empty.database_url} is not migrated: run `paystream db migrate`")
        assert (await cli(settings_environment(empty), "db", "migrate")).code == 0
        # Migrated, but its namespace has no topics.
        ran = await cli(settings_environment(empty), "status")
        topics = ", ".join(empty.topic(s.consumes[0]) for s in MONEY_STAGES)
        assert_one_error_line(
            ran,
            f"topic {topics} does not exist on {empty.kafka_bootstrap}: create the topics with"
            " `paystream topology apply`",
        )
    finally:
        await drop_database(empty)
