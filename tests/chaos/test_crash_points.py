"""The crash-point matrix: every stage killed (SIGKILL) at every point of its loop, then restarted.

`in_isolation` is reached only while a poison record is being isolated, so
those cases publish one (a trigger in the case's own database refuses it in
that stage's table) and check it was dead-lettered exactly once. The timer's
points (`after_tick_commit`, `after_tick_produce`: a settlement close
committed, its events produced but not yet marked published) exist only in
the settlement stage.

Every case's traffic mixes account requests into the payments, about one
record in three (`paystream.chaos.accounts`): fresh accounts opened, funded,
paid from, withdrawn from (some withdrawals declined for insufficient funds)
and some closed, and deposits and withdrawals on the demo payers, some
rejected by risk. Risk and funds are the stages that handle them, so their
cases kill the process in the middle of that traffic; after the crash at
`after_db_commit` or `after_produce` the batch between Kafka's committed
offset and PostgreSQL's (the one whose events are re-sent) is shown to hold
account requests. The `in_isolation` cases of risk and funds also isolate a
poison deposit (refused by a trigger on that stage's account table).

For each stage the pipeline runs as a separate OS process (`paystream run`)
with PAYSTREAM_CRASH_POINT set; the process must die by SIGKILL at that point
of that stage. A clean process then drains the pipeline, and every invariant
must hold: every payment terminal exactly once, no duplicate effect,
reconcile clean, downstream sees each batch once with the database's totals;
every account request answered exactly once as its script says, one journal
per succeeded deposit or withdrawal, the fresh accounts' balances as
scripted, one outcome event id per request on accounts.outcomes.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer

from paystream.chaos.accounts import AccountTraffic, TrafficItem, interleave, plan_account_traffic, publish_item
from paystream.chaos.checks import check_run
from paystream.chaos.processes import settings_environment
from paystream.db.pool import connect
from paystream.demo_data import build_world
from paystream.prepare import drop_database
from paystream.publisher import PaymentPublisher
from paystream.settings import CRASH_POINTS, TICK_CRASH_POINTS, Settings
from paystream.topic_scan import read_topic, topic_partitions
from schemas.accounts import DepositRequested
from schemas.payments import PaymentRequested
from tests.support.pipeline import drain, fresh_environment, generate, wait_terminal
from tests.support.stages import payment
from workers import STAGE_NAMES, build_stage

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

PAYMENTS_PER_CASE = 240
# Per case: 12 fresh accounts (6 closed at the end, 6 paying) and 4 rounds of demo-payer
# requests: 118 account requests and 6 payments of their own among the 240 payments.
FRESH_ACCOUNTS = 12
DEMO_PAYER_ROUNDS = 4
REPEATED_REQUESTS = 8
CRASH_WAIT_S = 90
# Account request schemas as the crashed stage reads them on its input topic.
ACCOUNT_SCHEMAS = {
    "risk": {"account.open.requested", "account.close.requested", "deposit.requested", "withdrawal.requested"},
    "funds": {"account.request.approved"},
}


@pytest.fixture(scope="module")
async def environments() -> AsyncIterator[dict[str, Settings]]:
    """One environment per stage, shared by that stage's crash points (but in_isolation)."""
    created = {stage: await fresh_environment(f"crash{stage[:4]}") for stage in STAGE_NAMES}
    yield created
    if os.environ.get("KEEP_TEST_DB") != "1":
        for settings in created.values():
            await drop_database(settings)


POISON_TABLES = {"risk": "risk_decisions", "funds": "holds", "clearing": "clearings", "settlement": "settlement_items"}
# Where the stages that handle account requests write them: a poison deposit is refused there.
ACCOUNT_POISON_TABLES = {"risk": "account_requests", "funds": "account_operations"}


def _cases() -> list[tuple[str, str]]:
    return [
        (stage, point)
        for point in CRASH_POINTS
        for stage in STAGE_NAMES
        if point not in TICK_CRASH_POINTS or stage == "settlement"
    ]


async def _install_poison(settings: Settings, stage: str) -> None:
    """PostgreSQL refuses rows of ids ending in -poison in `stage`'s tables: real poison records.

    Payment ids in the stage's payment table; for risk and funds also request
    ids in the table where that stage writes account requests.
    """
    triggers = [(POISON_TABLES[stage], "payment_id")]
    if stage in ACCOUNT_POISON_TABLES:
        triggers.append((ACCOUNT_POISON_TABLES[stage], "request_id"))
    connection = await connect(settings)
    try:
        for number, (table, column) in enumerate(triggers):
            await connection.execute(
                f"""
                CREATE OR REPLACE FUNCTION poison_rows_{number}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF NEW.{column} LIKE '%-poison' THEN
                        RAISE EXCEPTION 'test poison: % refused', NEW.{column};
                    END IF;
                    RETURN NEW;
                END $$;
                CREATE TRIGGER poison BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION poison_rows_{number}();
                """
            )
    finally:
        await connection.close()


def _traffic(settings: Settings, point: str) -> tuple[list[PaymentRequested], AccountTraffic]:
    """The case's payments and account requests; fresh account ids are the case's own."""
    prefix = f"{settings.namespace.rstrip('.')}-{point}"
    generated = generate(PAYMENTS_PER_CASE, prefix, seed=len(point))
    traffic = plan_account_traffic(
        build_world(), prefix, FRESH_ACCOUNTS, DEMO_PAYER_ROUNDS, random.Random(prefix), datetime.now(UTC)
    )
    return [g.payment for g in generated], traffic


async def _publish(settings: Settings, items: Sequence[TrafficItem]) -> None:
    async with PaymentPublisher(settings, client_id="paystream-tests") as publisher:
        for item in items:
            await publish_item(publisher, item)


async def _crashed_batch(settings: Settings, stage: str) -> list[dict[str, object]]:
    """The records between Kafka's committed offsets and PostgreSQL's: the batch committed but not acknowledged."""
    topic = settings.topic(build_stage(stage, settings).input_topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=settings.group(stage))
    await consumer.start()
    try:
        kafka = {tp.partition: await consumer.committed(tp) or 0 for tp in await topic_partitions(consumer, topic)}
    finally:
        await consumer.stop()
    connection = await connect(settings)
    try:
        rows = await connection.fetch(
            "SELECT partition, next_offset FROM stage_offsets WHERE group_id = $1 AND topic = $2",
            settings.group(stage),
            topic,
        )
    finally:
        await connection.close()
    database = {row["partition"]: row["next_offset"] for row in rows}
    return [
        msgspec.json.decode(record.value)
        for record in await read_topic(settings, topic)
        if kafka.get(record.partition, 0) <= record.offset < database.get(record.partition, 0)
    ]


async def _poison_dead_letters(
    settings: Settings, stage: str
) -> tuple[list[tuple[str, int, int]], list[tuple[str, int, int]]]:
    """Origins of the stage's `stage_error` dead letters, and of every copy of the poison record on its input topic.

    An upstream stage killed before its offset commit re-sends its events, so
    the poison event may sit on the input topic more than once (same event,
    other offsets): each copy must be dead-lettered exactly once, nothing else.
    """
    topic = settings.topic(build_stage(stage, settings).input_topic)
    copies = sorted(
        (record.topic, record.partition, record.offset)
        for record in await read_topic(settings, topic)
        if b"-poison" in (record.value or b"")
    )
    connection = await connect(settings)
    try:
        rows = await connection.fetch(
            """SELECT origin_topic, origin_partition, origin_offset FROM dead_letters
               WHERE stage = $1 AND rule = 'stage_error' ORDER BY 1, 2, 3""",
            stage,
        )
    finally:
        await connection.close()
    return [(r["origin_topic"], r["origin_partition"], r["origin_offset"]) for r in rows], copies


async def _run_until_crash(settings: Settings, stage: str, point: str) -> tuple[int, str]:
    env = settings_environment(
        settings.with_overrides(batch_records_max=40),
        {
            "PAYSTREAM_CRASH_POINT": point,
            "PAYSTREAM_CRASH_STAGE": stage,
            # Isolation happens in one batch only, and one tick may close and
            # publish every batch of the run: those crash at the first.
            "PAYSTREAM_CRASH_AFTER_BATCHES": "1" if point in ("in_isolation", *TICK_CRASH_POINTS) else "2",
        },
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "paystream.cli.main", "run",
        env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        output, _ = await asyncio.wait_for(process.communicate(), CRASH_WAIT_S)
    except TimeoutError:
        process.kill()
        output, _ = await process.communicate()
        return -1, output.decode(errors="replace")
    return process.returncode or 0, output.decode(errors="replace")


@pytest.mark.parametrize(("stage", "point"), _cases())
async def test_crash_point(environments: dict[str, Settings], stage: str, point: str) -> None:
    isolating = point == "in_isolation"
    # A poison record stays in its database for good: those cases get their own.
    settings = await fresh_environment(f"crashiso{stage[:4]}") if isolating else environments[stage]
    try:
        payments, traffic = _traffic(settings, point)
        ids = [p.payment_id for p in payments + traffic.payments]
        mixed = interleave(payments, traffic)
        # Repeats of payments and of account requests, answered like the originals.
        repeats = [*payments[:10], *traffic.requests[:REPEATED_REQUESTS]]
        if isolating:
            namespace = settings.namespace.rstrip(".")
            poison: list[TrafficItem] = [payment(f"{namespace}-poison")]
            if stage in ACCOUNT_POISON_TABLES:
                poison.append(
                    DepositRequested(
                        request_id=f"{namespace}-dep-poison", account_id=f"{namespace}-ghost-poison",
                        amount_minor=100, currency="EUR", source_ref="test", created_at=datetime.now(UTC),
                    )
                )  # fmt: skip
            await _install_poison(settings, stage)
            middle = len(mixed) // 2
            await _publish(settings, mixed[:middle] + poison + mixed[middle:] + repeats)
        else:
            await _publish(settings, mixed + repeats)

        marked = stage in ACCOUNT_SCHEMAS and point in ("after_db_commit", "after_produce")
        if marked and stage == "funds":
            # Risk running alongside feeds funds a few records at a time, so funds' killed batch
            # could be one payment; with its input all there, each batch is full (40 records).
            await drain(settings, stages=["risk"], idle_exit_ms=2_000)
        returncode, output = await _run_until_crash(settings, stage, point)
        assert returncode == -signal.SIGKILL, output[-3000:]
        assert f"crash point {point} reached" in output
        if marked:
            # The batch whose events the restart re-sends held account requests.
            crashed = await _crashed_batch(settings, stage)
            assert crashed
            assert any(record.get("schema") in ACCOUNT_SCHEMAS[stage] for record in crashed), crashed

        await drain(settings, idle_exit_ms=3_000)
        statuses = await wait_terminal(settings, ids, timeout_s=float(os.environ.get("WAIT_S", "120")))
        assert len(statuses) == len(ids)
        report = await check_run(settings, ids, traffic)
        assert report.problems() == []
        assert report.ok
        assert report.account_requests == len(traffic.expected)
        assert report.account_answers == traffic.counts()
        if isolating:
            letters, copies = await _poison_dead_letters(settings, stage)
            # The poison payment, and for risk and funds the poison deposit, each at least once.
            assert len(copies) >= (2 if stage in ACCOUNT_POISON_TABLES else 1), (
                "a poison record never reached the stage"
            )
            assert letters == copies
    finally:
        if isolating and os.environ.get("KEEP_TEST_DB") != "1":
            await drop_database(settings)
