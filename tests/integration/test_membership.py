"""Group membership failures: a worker that cannot own its partitions must stop, and say why.

Each failure is made for real in the test's own database or with a real
process: a table renamed away (an environment error, no retry fixes it), a
broker address where nothing listens, a row lock held from another
connection. Waits have generous bounds and fail loudly with what was seen.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from paystream.chaos.processes import settings_environment
from paystream.cli.main import EXIT_OPERATING_ERROR
from paystream.db.pool import connect, create_pool
from paystream.prepare import delete_topics, drop_database
from paystream.publisher import PaymentPublisher
from paystream.runner import ShutdownTimeoutError, run_stages
from paystream.settings import Settings
from paystream.stage.loop import StageLoop
from tests.support.pipeline import fresh_environment
from tests.support.stages import payment
from tests.support.topics import wait_partitions_led
from topology.topics import PAYMENTS_APPROVED, PAYMENTS_REQUESTED, topic_spec
from workers import build_stage

pytestmark = pytest.mark.integration

# Bounds for what must happen; none is a timing claim, each only keeps a broken mechanism from hanging the run.
STOP_WAIT_S = 120.0
# Below the pool's 120 s command timeout, after which the statement stuck on the test's lock would end by
# itself (a retriable timeout, then a clean stop) and hide a runner that ignores the grace.
GRACE_WAIT_S = 90.0
EXIT_WAIT_S = 120.0
# SIGTERM while retrying the first connection must end the worker long before retry_duration_ms_max (300 s).
SIGTERM_EXIT_S = 60.0


@pytest.fixture
async def environment() -> AsyncIterator[Settings]:
    """One environment per test: each breaks its database in its own way."""
    settings = await fresh_environment("member")
    yield settings
    await drop_database(settings)
    # Its topics too: a broker holding thousands of dead test partitions runs out of file descriptors.
    await delete_topics(settings)


@pytest.fixture
async def db(environment: Settings) -> AsyncIterator[Any]:
    connection = await connect(environment)
    yield connection
    await connection.close()


async def _publish_one(settings: Settings, payment_id: str) -> None:
    async with PaymentPublisher(settings, client_id="paystream-tests-membership") as publisher:
        await publisher.publish(payment(payment_id))


# -- a claim that fails -------------------------------------------------------------------------


async def test_a_failed_claim_stops_the_loop_with_its_error(environment: Settings, db: Any) -> None:
    await db.execute("ALTER TABLE stage_offsets RENAME TO stage_offsets_gone")
    await _publish_one(environment, "claim-fails-1")
    await wait_partitions_led(environment, PAYMENTS_REQUESTED)
    pool = await create_pool(environment)
    try:
        loop: StageLoop[Any] = StageLoop(build_stage("risk", environment), environment, pool)
        # The listener cannot raise (aiokafka would only log it); the loop must raise it instead of
        # keeping the partitions assigned and never processing them.
        with pytest.raises(asyncpg.UndefinedTableError, match="stage_offsets") as raised:
            await asyncio.wait_for(loop.run(asyncio.Event()), STOP_WAIT_S)
    finally:
        await pool.close()
    assert loop.fatal is raised.value
    assert loop.stats.rebalances >= 1
    assert (loop.epochs, loop.positions, loop.stats.batches) == ({}, {}, 0)
    assert await db.fetchval("SELECT count(*) FROM risk_decisions") == 0


async def test_a_failed_claim_makes_run_stages_raise_and_stops_the_other_stages(environment: Settings, db: Any) -> None:
    # Only the risk group's claims are refused (as a revoked privilege would be); funds is healthy.
    await db.execute(
        """CREATE FUNCTION refuse_claim() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
             RAISE EXCEPTION 'claims refused for %', NEW.group_id USING ERRCODE = 'insufficient_privilege';
           END $$"""
    )
    await db.execute(
        f"""CREATE TRIGGER refuse_risk_claims BEFORE INSERT OR UPDATE ON stage_offsets FOR EACH ROW
            WHEN (NEW.group_id = '{environment.group("risk")}') EXECUTE FUNCTION refuse_claim()"""
    )
    await _publish_one(environment, "claim-fails-2")
    for topic in (PAYMENTS_REQUESTED, PAYMENTS_APPROVED):
        await wait_partitions_led(environment, topic)
    # Returning at all means the healthy stage was stopped too (within the grace, or the error
    # would be ShutdownTimeoutError); a runner that waited for every stage would hang here.
    with pytest.raises(
        asyncpg.InsufficientPrivilegeError, match=re.escape(f"claims refused for {environment.group('risk')}")
    ):
        await asyncio.wait_for(run_stages(environment, ["risk", "funds"], stop=asyncio.Event()), STOP_WAIT_S)
    assert await db.fetchval("SELECT count(*) FROM risk_decisions") == 0
    assert await db.fetchval("SELECT count(*) FROM stage_offsets WHERE group_id = $1", environment.group("risk")) == 0


# -- `paystream run` with a dead stage ---------------------------------------------------------


async def test_paystream_run_exits_non_zero_when_one_stage_dies(environment: Settings, db: Any) -> None:
    # Settlement's timer (its first tick) needs this table: that stage dies, the three others are healthy.
    await db.execute("ALTER TABLE settlement_batches RENAME TO settlement_batches_gone")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "paystream.cli.main", "run",
        env=settings_environment(environment), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        raw, _ = await asyncio.wait_for(process.communicate(), EXIT_WAIT_S)
    except TimeoutError:
        process.kill()
        raw, _ = await process.communicate()
        raise AssertionError(
            f"`paystream run` still running {EXIT_WAIT_S:.0f} s after its settlement stage died:\n"
            + raw.decode(errors="replace")[-3000:]
        ) from None
    output = raw.decode(errors="replace")
    # An operating error, not a crash: exit 2 and one line naming it, no traceback.
    assert process.returncode == EXIT_OPERATING_ERROR, output[-3000:]
    said = [line for line in output.splitlines() if not line.startswith("{")]
    assert len(said) == 1, output[-3000:]
    assert said[0].startswith("paystream: error: "), said
    assert 'relation "settlement_batches" does not exist' in said[0], said
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    died = [e for e in events if e.get("event") == "stage died; stopping the others"]
    assert len(died) == 1, output[-3000:]
    assert died[0]["stage"] == "settlement"
    assert "UndefinedTableError" in died[0]["error"]
    assert "settlement_batches" in died[0]["error"]
    # The healthy stages were stopped (not left running on with a dead neighbour).
    stopped = sorted(e["stage"] for e in events if e.get("event") == "stage stopped")
    assert stopped == ["clearing", "funds", "risk", "settlement"], output[-3000:]


# -- SIGTERM while the first connection is being retried -----------------------------------------


async def test_sigterm_ends_a_worker_retrying_its_first_connection(environment: Settings) -> None:
    # A port bound but never listening: every connection attempt is refused, for as long as the test holds it.
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        port = reserved.getsockname()[1]
        worker_settings = environment.with_overrides(kafka_bootstrap=f"127.0.0.1:{port}")
        assert worker_settings.retry_duration_ms_max >= 300_000
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "paystream.cli.main", "worker", "risk",
            env=settings_environment(worker_settings), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        assert process.stdout is not None
        seen: list[str] = []
        try:
            await asyncio.wait_for(_read_until(process.stdout, "transient failure", seen), EXIT_WAIT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise AssertionError("the worker never reported a retry:\n" + "".join(seen)[-3000:]) from None
        assert process.returncode is None, "".join(seen)[-3000:]

        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        try:
            rest = await asyncio.wait_for(process.stdout.read(), SIGTERM_EXIT_S)
            await asyncio.wait_for(process.wait(), SIGTERM_EXIT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise AssertionError(
                f"no exit {SIGTERM_EXIT_S:.0f} s after SIGTERM while retrying:\n" + "".join(seen)[-3000:]
            ) from None
        exit_s = time.monotonic() - signalled
    output = "".join(seen) + rest.decode(errors="replace")
    assert process.returncode == 0, output[-3000:]
    assert "stage stopped before it connected" in output, output[-3000:]
    assert exit_s < SIGTERM_EXIT_S


async def _read_until(stream: asyncio.StreamReader, text: str, seen: list[str]) -> None:
    while True:
        line = await stream.readline()
        if not line:
            raise AssertionError(f"output ended before {text!r}")
        seen.append(line.decode(errors="replace"))
        if text in seen[-1]:
            return


# -- shutdown_grace_ms ---------------------------------------------------------------------------


async def _claimed(db: Any, settings: Settings, partitions: int) -> bool:
    rows = await db.fetchval(
        "SELECT count(*) FROM stage_offsets WHERE group_id = $1 AND topic = $2",
        settings.group("risk"),
        settings.topic(PAYMENTS_REQUESTED),
    )
    return int(rows) == partitions


async def _lock_waiter(db: Any, holder_pid: int) -> tuple[int, str] | None:
    """A backend of this database (not the holder) waiting on a lock: the stage's batch transaction."""
    row = await db.fetchrow(
        """SELECT pid, query FROM pg_stat_activity
           WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> $1 LIMIT 1""",
        holder_pid,
    )
    return None if row is None else (row["pid"], row["query"])


async def _until(what: str, check: Any, task: asyncio.Task[Any]) -> Any:
    deadline = time.monotonic() + STOP_WAIT_S
    while not (result := await check()):
        if task.done():
            raise AssertionError(f"waiting for {what}, the stages ended: {task.result()!r}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {STOP_WAIT_S:.0f} s")
        await asyncio.sleep(0.05)
    return result


async def test_a_stage_that_does_not_stop_within_the_grace_fails_the_run(environment: Settings, db: Any) -> None:
    settings = environment.with_overrides(shutdown_grace_ms=1_000)
    partitions = topic_spec(PAYMENTS_REQUESTED).partitions
    await wait_partitions_led(environment, PAYMENTS_REQUESTED)
    stop = asyncio.Event()
    running = asyncio.create_task(run_stages(settings, ["risk"], stop=stop))
    holder = await connect(environment)
    try:
        await _until("the risk stage claims its partitions", lambda: _claimed(db, environment, partitions), running)
        # Every offset row locked from another connection: the stage's next batch transaction
        # (its fenced advance) waits for it, for as long as the test holds the lock.
        async with holder.transaction():
            await holder.execute(
                "SELECT 1 FROM stage_offsets WHERE group_id = $1 FOR UPDATE", environment.group("risk")
            )
            await _publish_one(environment, "grace-1")
            _, query = await _until(
                "the batch transaction waits on the lock",
                lambda: _lock_waiter(db, holder.get_server_pid()),
                running,
            )
            assert "greatest(o.next_offset" in query, query  # fencing.advance, in the batch transaction
            stop.set()
            with pytest.raises(ShutdownTimeoutError, match="risk") as raised:
                await asyncio.wait_for(running, GRACE_WAIT_S)
        # The lock is released here, after the run gave up on the stage.
        assert "1000 ms" in str(raised.value)
    finally:
        stop.set()
        if not running.done():
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        await holder.close()
    # The batch in flight was cancelled before it committed: nothing of it is stored, its offsets did not move.
    assert await db.fetchval("SELECT count(*) FROM risk_decisions") == 0
    offsets = await db.fetch(
        "SELECT DISTINCT next_offset FROM stage_offsets WHERE group_id = $1", environment.group("risk")
    )
    assert [row["next_offset"] for row in offsets] == [-1]


# -- cancelling the runner -----------------------------------------------------------------------


def _stage_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("stage-") and not t.done()]


async def test_cancelling_run_stages_ends_its_stage_loops(environment: Settings, db: Any) -> None:
    """A caller that gives up on the runner (a timeout around it) must not leave its stages running on."""
    partitions = topic_spec(PAYMENTS_REQUESTED).partitions
    await wait_partitions_led(environment, PAYMENTS_REQUESTED)
    assert _stage_tasks() == []
    running = asyncio.create_task(run_stages(environment, ["risk"], stop=asyncio.Event()))
    try:
        await _until("the risk stage claims its partitions", lambda: _claimed(db, environment, partitions), running)
        assert [t.get_name() for t in _stage_tasks()] == ["stage-risk"]
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(running, STOP_WAIT_S)
        assert _stage_tasks() == []
    finally:
        orphans = _stage_tasks()
        for task in orphans:
            task.cancel()
        await asyncio.gather(*orphans, return_exceptions=True)
