"""The crash-point matrix: every stage killed (SIGKILL) at every point of its loop, then restarted.

`in_isolation` is reached only while a poison record is being isolated, so
those cases publish one (a trigger in the case's own database refuses it in
that stage's table) and check it was dead-lettered exactly once (each copy
re-sent by a restarted upstream at most once: `_poison_dead_letters`). The timer's
points (`after_tick_commit`, `after_tick_produce`: the timer's work
committed, its events produced but not yet marked published) exist in the
stages that have a timer: settlement (closing batches) and funds (expiring
manual-capture holds).

Every case's traffic mixes account requests into the payments, about one
record in three (`paystream.chaos.accounts`): fresh accounts opened, funded,
paid from, withdrawn from (some withdrawals declined for insufficient funds)
and some closed, and deposits and withdrawals on the demo payers, some
rejected by risk. It also carries the payment lifecycle
(`paystream.chaos.lifecycle`): manual-capture payments captured in full, in
part, voided and left to expire (their deadline a few seconds after they are
made, funds' timer every 200 ms), captures declined, and refunds (partial,
full, declined, one repeated) of payments the module fixture made and cleared
before the cases ran (a refund is only decided once its payment is cleared).
Risk and funds handle the requests, clearing the accepted captures, settlement
the refunds' negative items, funds' timer the expiries: each is killed at each
of its points in the middle of that traffic. At `after_db_commit` and
`after_produce` the stages upstream of the killed one are drained first and
the killed stage takes its whole input as its first batch; after the crash
that batch, between Kafka's committed offset and PostgreSQL's (the one whose
events are re-sent), is shown to hold account requests, captures, voids and
refunds (risk, funds), accepted captures (clearing) or refunds (settlement).
At `after_db_commit_deferred` (a batch's transaction committed while the
Kafka commit of earlier batches, their events produced, is deferred: commit
interval 60 s) more than one batch is shown to lie between the two offsets.
After a crash at funds' timer points the test finds expired holds whose
outcomes are not marked published, their outcomes not yet produced
(`after_tick_commit`) or produced (`after_tick_produce`). The `in_isolation`
cases of risk and funds also isolate a poison deposit (refused by a trigger on
that stage's account table).

For each stage the pipeline runs as a separate OS process (`paystream run`)
with PAYSTREAM_CRASH_POINT set; the process must die by SIGKILL at that point
of that stage. A clean process then drains the pipeline, and every invariant
must hold (`paystream.chaos.checks`): every payment terminal exactly once, no
duplicate effect, reconcile clean, downstream sees each batch once with the
database's totals, every copy of an event the same bytes; every account
request answered exactly once as its script says, one journal per succeeded
deposit, withdrawal or refund, the fresh accounts' balances as scripted, one
outcome event id per request on accounts.outcomes; every manual-capture
payment ending captured, voided or expired as scripted with its hold's
captured and released amounts, one clearing journal per captured payment with
the captured amount, every refund applied once with one settlement item, each
expired outcome under one event id.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer

from paystream.chaos.accounts import AccountTraffic, TrafficItem, interleave, plan_account_traffic, publish_item
from paystream.chaos.checks import check_run
from paystream.chaos.lifecycle import LifecyclePlan, plan_lifecycle_traffic
from paystream.chaos.processes import settings_environment
from paystream.db.pool import connect
from paystream.demo_data import build_world
from paystream.prepare import drop_database
from paystream.publisher import PaymentPublisher
from paystream.settings import CRASH_POINTS, TICK_CRASH_POINTS, Settings
from paystream.topic_scan import read_topic, topic_partitions
from schemas.accounts import DepositRequested
from schemas.payments import PaymentRequested, outcome_event_id
from tests.support.pipeline import drain, fast_settings, fresh_environment, generate, wait_terminal
from tests.support.stages import payment
from topology.topics import PAYMENTS_OUTCOMES
from workers import STAGE_NAMES, build_stage

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

PAYMENTS_PER_CASE = 240
# Per case: 12 fresh accounts (6 closed at the end, 6 paying) and 4 rounds of demo-payer
# requests: 118 account requests and 6 payments of their own among the 240 payments.
FRESH_ACCOUNTS = 12
DEMO_PAYER_ROUNDS = 4
# And the lifecycle: 4 capturing accounts (16 manual-capture payments; 28 captures, voids and
# refunds), and the refunds of 4 refunding accounts (24 requests, 20 distinct: each account sends
# one refund id twice) whose 8 payments the fixture cleared before the cases.
LIFECYCLE = LifecyclePlan(capturing_accounts=4, refunding_accounts=0, expire_after=timedelta(seconds=3))
SETUP = LifecyclePlan(capturing_accounts=0, refunding_accounts=4)
HOLD_EXPIRY_INTERVAL_MS = 200
REPEATED_REQUESTS = 8
CRASH_WAIT_S = 90
# Stages with a timer: their cases include the tick's crash points.
TICK_STAGES = ("funds", "settlement")
# At after_db_commit and after_produce: the stages drained first, so that the crashed stage finds its
# whole input on its topic and takes it as its first batch, and what that batch (the one whose events
# the restart re-sends) must hold: `_held` names it.
UPSTREAM = {"risk": [], "funds": ["risk"], "clearing": ["risk", "funds"], "settlement": ["risk", "funds", "clearing"]}
MARKS = {
    "risk": {"account request", "capture", "void", "refund"},
    "funds": {"account request", "capture", "void", "refund"},
    "clearing": {"capture"},
    "settlement": {"refund"},
}
WHOLE_BATCH_RECORDS_MAX = 1_000
BATCH_RECORDS = 40
DEFERRED_INTERVAL_MS = 60_000
ACCOUNT_SCHEMAS = {"account.open.requested", "account.close.requested", "deposit.requested", "withdrawal.requested"}
ACCOUNT_KINDS = {"account.open", "account.close", "deposit", "withdrawal"}


def _held(record: dict[str, object]) -> str:
    """What a record on a stage's input topic is, for `MARKS`: an account request (open, close, deposit,
    withdrawal), a capture, void or refund request (risk) or approval (funds), an accepted capture (funds.held
    with its amount: clearing), a refund (settlement); anything else is a payment."""
    schema, kind = record.get("schema"), record.get("kind")
    if schema in ACCOUNT_SCHEMAS or (schema == "account.request.approved" and kind in ACCOUNT_KINDS):
        return "account request"
    if schema in ("capture.requested", "void.requested", "refund.requested"):
        return str(schema).removesuffix(".requested")
    if schema == "account.request.approved":
        return str(kind)
    if schema == "funds.held" and record.get("capture_minor") is not None:
        return "capture"
    return "refund" if schema == "refund.cleared" else "payment"


@dataclass
class Matrix:
    """The cases' environments, and each case's refunding scripts (their payments already cleared)."""

    environments: dict[tuple[str, bool], Settings]
    setups: dict[tuple[str, str], AccountTraffic] = field(default_factory=dict)

    def settings(self, stage: str, point: str) -> Settings:
        return self.environments[(stage, point == "in_isolation")]


@pytest.fixture(scope="module")
async def matrix() -> AsyncIterator[Matrix]:
    """One environment per stage shared by that stage's crash points, and one per stage for in_isolation (a poison
    record stays in its database for good); in each, the payments every case will refund, cleared."""
    base = fast_settings().with_overrides(hold_expiry_interval_ms=HOLD_EXPIRY_INTERVAL_MS)
    keys = [(stage, isolating) for stage in STAGE_NAMES for isolating in (False, True)]
    created = await asyncio.gather(
        *(fresh_environment(f"crash{'iso' if isolating else ''}{stage[:4]}", base) for stage, isolating in keys)
    )
    matrix = Matrix(dict(zip(keys, created, strict=True)))
    try:
        await _clear_refunded_payments(matrix)
        yield matrix
    finally:
        if os.environ.get("KEEP_TEST_DB") != "1":
            for settings in created:
                await drop_database(settings)


async def _clear_refunded_payments(matrix: Matrix) -> None:
    """Plan every case's refunding scripts, publish their payments and drain every environment once."""
    world = build_world()
    by_environment: dict[tuple[str, bool], list[list[TrafficItem]]] = {}
    for stage, point in _cases():
        settings = matrix.settings(stage, point)
        prefix = f"{_prefix(settings, point)}-s"
        setup = AccountTraffic()
        plan_lifecycle_traffic(setup, world, prefix, SETUP, random.Random(prefix), datetime.now(UTC))
        matrix.setups[(stage, point)] = setup
        by_environment.setdefault((stage, point == "in_isolation"), []).extend(setup.setup)
    for key, sequences in by_environment.items():
        await _publish(matrix.environments[key], interleave([], sequences))
    await asyncio.gather(*(drain(settings, idle_exit_ms=2_000) for settings in matrix.environments.values()))
    for (stage, point), setup in matrix.setups.items():
        connection = await connect(matrix.settings(stage, point))
        try:
            rows = await connection.fetch(
                "SELECT payment_id, status FROM payments WHERE payment_id = ANY($1::text[])", setup.awaited
            )
        finally:
            await connection.close()
        statuses = {row["payment_id"]: row["status"] for row in rows}
        # Refunds of them are decided against what was captured, as their scripts say.
        assert len(statuses) == len(setup.awaited), statuses
        assert set(statuses.values()) <= {"cleared", "settled"}, statuses


def _cases() -> list[tuple[str, str]]:
    return [
        (stage, point)
        for point in CRASH_POINTS
        for stage in STAGE_NAMES
        if point not in TICK_CRASH_POINTS or stage in TICK_STAGES
    ]


def _prefix(settings: Settings, point: str) -> str:
    return f"{settings.namespace.rstrip('.')}-{point}"


POISON_TABLES = {"risk": "risk_decisions", "funds": "holds", "clearing": "clearings", "settlement": "settlement_items"}
# Where the stages that handle account requests write them: a poison deposit is refused there.
ACCOUNT_POISON_TABLES = {"risk": "account_requests", "funds": "account_operations"}


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
    """The case's payments, account requests and capturing scripts (planned now: their holds expire a few
    seconds from now); ids are the case's own."""
    prefix = _prefix(settings, point)
    generated = generate(PAYMENTS_PER_CASE, prefix, seed=len(point))
    rng = random.Random(prefix)
    world = build_world()
    now = datetime.now(UTC)
    traffic = plan_account_traffic(world, prefix, FRESH_ACCOUNTS, DEMO_PAYER_ROUNDS, rng, now)
    plan_lifecycle_traffic(traffic, world, prefix, LIFECYCLE, rng, now)
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


Origin = tuple[str, int, int]


async def _poison_dead_letters(settings: Settings, stage: str) -> tuple[list[Origin], dict[str, list[Origin]]]:
    """Origins of the stage's `stage_error` dead letters, and of every copy of each poison record on its input
    topic, by record (`deposit` or `payment`), in offset order (one key: one partition).

    An upstream stage killed before its offset commit re-sends its events, so
    a poison event may sit on the input topic more than once (same event id,
    other offsets). The copies that reach the stage before the isolation of the
    first one commits are isolated and dead-lettered with it; a copy read after
    that finds the payment or request already ended and is absorbed as any
    repeat is. So each record's dead letters are its first copies, in order,
    at least one, none twice, and nothing else.
    """
    topic = settings.topic(build_stage(stage, settings).input_topic)
    copies: dict[str, list[Origin]] = {}
    for record in await read_topic(settings, topic):
        value = record.value or b""
        if b"-poison" in value:
            kind = "deposit" if b"dep-poison" in value else "payment"
            copies.setdefault(kind, []).append((record.topic, record.partition, record.offset))
    for origins in copies.values():
        origins.sort()
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


async def _run_until_crash(settings: Settings, stage: str, point: str, whole_batch: bool) -> tuple[int, str]:
    """`paystream run` with the crash point armed; its exit code (-SIGKILL expected) and its output.

    `whole_batch`: the crash comes at the first batch, as large as the input the
    stage finds (its upstream stages were drained first, up to
    WHOLE_BATCH_RECORDS_MAX records), instead of the second batch of 40.
    """
    # Isolation happens in one batch only, and one tick may close and publish every batch of the run
    # (or expire every hold): those crash at the first.
    first = whole_batch or point in ("in_isolation", *TICK_CRASH_POINTS)
    # At after_db_commit_deferred: the first batch's commit is made, every later one deferred past the crash.
    # Batches of one record there, so that more than one record between the two offsets is more than one batch.
    deferred = point == "after_db_commit_deferred"
    interval_ms = DEFERRED_INTERVAL_MS if deferred else settings.offset_commit_interval_ms
    batch_records = 1 if deferred else BATCH_RECORDS
    env = settings_environment(
        settings.with_overrides(
            batch_records_max=WHOLE_BATCH_RECORDS_MAX if whole_batch else batch_records,
            offset_commit_interval_ms=interval_ms,
        ),
        {
            "PAYSTREAM_CRASH_POINT": point,
            "PAYSTREAM_CRASH_STAGE": stage,
            "PAYSTREAM_CRASH_AFTER_BATCHES": "1" if first else "2",
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


async def _expiries_in_flight(settings: Settings, traffic: AccountTraffic) -> tuple[int, int]:
    """Of the case's expired holds whose outcome is not marked published: how many, and how many have their
    expired outcome on payments.outcomes already."""
    expiring = [p for p, hold in traffic.expected_holds.items() if hold.status == "expired"]
    connection = await connect(settings)
    try:
        unmarked = await connection.fetch(
            """SELECT payment_id FROM holds
               WHERE payment_id = ANY($1::text[]) AND status = 'expired' AND expiry_published_at IS NULL""",
            expiring,
        )
    finally:
        await connection.close()
    ids = {outcome_event_id(row["payment_id"], "expired") for row in unmarked}
    produced = {
        msgspec.json.decode(record.value)["event_id"]
        for record in await read_topic(settings, settings.topic(PAYMENTS_OUTCOMES))
    }
    return len(ids), len(ids & produced)


async def _past_the_deadlines(traffic: AccountTraffic) -> None:
    """Until the holds left to expire are past their deadline, so that the drain's timer expires them."""
    deadlines = [p.capture_by for p in traffic.payments if p.capture_by is not None]
    if deadlines:
        await asyncio.sleep(max(0.0, (max(deadlines) - datetime.now(UTC)).total_seconds() + 0.1))


@pytest.mark.parametrize(("stage", "point"), _cases())
async def test_crash_point(matrix: Matrix, stage: str, point: str) -> None:
    isolating = point == "in_isolation"
    settings = matrix.settings(stage, point)
    payments, traffic = _traffic(settings, point)
    # The refunds of payments the fixture cleared go out with the rest.
    traffic.extend(matrix.setups[(stage, point)])
    ids = [p.payment_id for p in payments + traffic.payments]
    mixed = interleave(payments, [*traffic.sequences, *traffic.later])
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

    marked = point in ("after_db_commit", "after_produce")
    deferred = point == "after_db_commit_deferred"
    if (marked or deferred) and UPSTREAM[stage]:
        # With its upstream running alongside, a stage is fed a few records at a time and its killed
        # batch could hold one payment; with its input all there, it takes all of it in one batch.
        await drain(settings, stages=UPSTREAM[stage], idle_exit_ms=2_000)
    returncode, output = await _run_until_crash(settings, stage, point, whole_batch=marked)
    assert returncode == -signal.SIGKILL, output[-3000:]
    assert f"crash point {point} reached" in output
    if marked:
        # The batch whose events the restart re-sends held what this stage does for accounts and the lifecycle.
        crashed = await _crashed_batch(settings, stage)
        assert MARKS[stage] <= {_held(record) for record in crashed}, Counter(map(_held, crashed))
    if deferred:
        # Killed after a transaction while an earlier batch's events were out and its Kafka commit deferred:
        # with batches of one record, more than one record lies between Kafka's offset and PostgreSQL's.
        assert len(await _crashed_batch(settings, stage)) > 1
    if stage == "funds" and point in TICK_CRASH_POINTS:
        # Killed with expiries committed and not marked published: their outcomes not yet produced, or produced.
        unmarked, produced = await _expiries_in_flight(settings, traffic)
        assert unmarked > 0
        assert produced == (unmarked if point == "after_tick_produce" else 0)

    await _past_the_deadlines(traffic)
    await drain(settings, idle_exit_ms=3_000)
    statuses = await wait_terminal(settings, ids, timeout_s=float(os.environ.get("WAIT_S", "120")))
    assert len(statuses) == len(ids)
    report = await check_run(settings, ids, traffic)
    assert report.problems() == []
    assert report.ok
    assert report.account_requests == len(traffic.expected)
    assert report.account_answers == traffic.counts()
    # The lifecycle ended as scripted: captured, voided, expired; each refund applied and settled once.
    scripted = Counter(traffic.expected_payments[p] for p in traffic.expected_holds)
    assert report.lifecycle_payments == dict(scripted)
    refunds = [k for k, e in traffic.expected.items() if k[0] == "refund" and e.status == "succeeded"]
    assert report.refunds_applied == report.refund_items == len(refunds) > 0
    expired_records, expired = report.expired_outcomes
    assert expired == scripted["expired"] > 0
    if stage == "funds" and point == "after_tick_produce":
        assert expired_records > expired  # the outcomes produced before the kill were produced again
    if isolating:
        letters, copies = await _poison_dead_letters(settings, stage)
        # The poison payment, and for risk and funds the poison deposit.
        assert set(copies) == ({"payment", "deposit"} if stage in ACCOUNT_POISON_TABLES else {"payment"}), copies
        assert len(letters) == len(set(letters)), letters
        by_record = {kind: [o for o in letters if o in origins] for kind, origins in copies.items()}
        assert sum(map(len, by_record.values())) == len(letters), (letters, copies)  # nothing but the copies
        for kind, origins in copies.items():
            # Its first copies, in order: at least the first, then those isolated in the same batch.
            assert by_record[kind] == origins[: len(by_record[kind])] and by_record[kind], (kind, letters, origins)
