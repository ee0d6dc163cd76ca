"""Fencing by owner epoch, step by step, with two real stage loops of one group on one partition.

Group rebalances cannot be stepped, so the loops' clients are started
without joining the group and each is given partition 0 by manual
assignment; the test then plays the rebalance itself: who claims the
partition (`take_partitions`), who fetches, who processes, in a fixed order.
Every step is checked against `stage_offsets` (next offset and epoch), the
stored decisions and the loops' counters.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from paystream.db.pool import connect, create_pool
from paystream.kafka import make_producer
from paystream.prepare import delete_topics, drop_database
from paystream.settings import Settings
from paystream.stage.contract import Origin, Refused
from paystream.stage.dead_letters import store_dead_letters
from paystream.stage.fencing import NO_OFFSET, FencedError, advance, claim_partitions
from paystream.stage.loop import StageLoop
from paystream.stage.membership import reclaim_fenced, take_partitions
from schemas.codec import encode
from schemas.payments import PaymentRequested
from tests.support.pipeline import fresh_environment
from tests.support.stages import payment
from tests.support.topics import wait_partitions_led
from topology.topics import PAYMENTS_APPROVED, PAYMENTS_OUTCOMES, PAYMENTS_REQUESTED, topic_spec
from workers import build_stage

pytestmark = pytest.mark.integration

PARTITION = 0
# Generous bounds for waits that must end; reaching one fails the test with what was seen.
FETCH_WAIT_S = 60.0

Batch = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]


@pytest.fixture
async def environment() -> AsyncIterator[Settings]:
    """One environment per test: its own topics, group offsets and stage_offsets rows."""
    settings = await fresh_environment("fence")
    yield settings
    await drop_database(settings)
    # Its topics too: a broker holding thousands of dead test partitions runs out of file descriptors.
    await delete_topics(settings)


@pytest.fixture
async def pool(environment: Settings) -> AsyncIterator[Any]:
    created = await create_pool(environment)
    yield created
    await created.close()


@pytest.fixture
async def db(environment: Settings) -> AsyncIterator[Any]:
    connection = await connect(environment)
    yield connection
    await connection.close()


class Loops:
    """Risk stage loops started without a group membership; stopped at the end of the test."""

    def __init__(self, settings: Settings, pool: Any) -> None:
        self.settings = settings
        self.pool = pool
        self.tp = TopicPartition(settings.topic(PAYMENTS_REQUESTED), PARTITION)
        self.started: list[StageLoop[Any]] = []

    async def start(self) -> StageLoop[Any]:
        loop: StageLoop[Any] = StageLoop(build_stage("risk", self.settings), self.settings, self.pool)
        self.started.append(loop)
        await loop._start_clients()
        loop.consumer.assign([self.tp])
        return loop

    async def stop(self) -> None:
        for loop in self.started:
            await loop._close_clients()


@pytest.fixture
async def loops(environment: Settings, pool: Any) -> AsyncIterator[Loops]:
    started = Loops(environment, pool)
    yield started
    await started.stop()


def requests(prefix: str, count: int) -> list[PaymentRequested]:
    return [payment(f"{prefix}-{i:03d}") for i in range(count)]


async def produce(settings: Settings, payments: Sequence[PaymentRequested], partition: int = PARTITION) -> None:
    """Append the requests to one partition of payments.requested, in order."""
    producer = make_producer(settings, "paystream-tests-fencing")
    await producer.start()
    try:
        for item in payments:
            await producer.send_and_wait(
                settings.topic(PAYMENTS_REQUESTED),
                value=encode(item),
                key=item.payer_account.encode(),
                partition=partition,
            )
    finally:
        await producer.stop()


async def fetch(loop: StageLoop[Any], tp: TopicPartition, count: int, from_offset: int = 0) -> Batch:
    """Everything getmany returns until `count` records at or after `from_offset` arrived: one batch."""
    fetched: list[ConsumerRecord[bytes, bytes]] = []
    deadline = time.monotonic() + FETCH_WAIT_S
    while sum(1 for r in fetched if r.offset >= from_offset) < count:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"only {len(fetched)} records fetched ({[r.offset for r in fetched]}) after {FETCH_WAIT_S:.0f} s,"
                f" wanted {count} from offset {from_offset}"
            )
        got = await loop.consumer.getmany(tp, timeout_ms=200)
        fetched.extend(got.get(tp, []))
    return {tp: fetched}


async def offset_row(db: Any, settings: Settings, partition: int = PARTITION) -> tuple[int, int] | None:
    """(next_offset, epoch) of the risk group's row for `partition`, None when there is none."""
    row = await db.fetchrow(
        "SELECT next_offset, epoch FROM stage_offsets WHERE group_id = $1 AND topic = $2 AND partition = $3",
        settings.group("risk"),
        settings.topic(PAYMENTS_REQUESTED),
        partition,
    )
    return None if row is None else (row["next_offset"], row["epoch"])


async def decisions(db: Any, prefix: str) -> list[tuple[Any, ...]]:
    """Every stored trace of the risk stage for these payments: decisions and payment rows."""
    rows = await db.fetch(
        """SELECT d.payment_id, d.decision, d.reasons, d.assessed_at, p.status, p.risk_at
           FROM risk_decisions d FULL JOIN payments p USING (payment_id)
           WHERE coalesce(d.payment_id, p.payment_id) LIKE $1 || '-%'
           ORDER BY 1""",
        prefix,
    )
    return [tuple(row) for row in rows]


async def outputs_on_kafka(settings: Settings, loop: StageLoop[Any]) -> int:
    """How many records the risk stage's output topics hold (approvals and rejections)."""
    tps = [
        TopicPartition(settings.topic(name), p)
        for name in (PAYMENTS_APPROVED, PAYMENTS_OUTCOMES)
        for p in range(topic_spec(name).partitions)
    ]
    ends = await loop.consumer.end_offsets(tps)
    return int(sum(ends.values()))


async def test_two_consumers_one_partition_step_by_step(environment: Settings, loops: Loops, db: Any) -> None:
    tp = loops.tp
    first, more = 5, 4

    # (a) A takes the partition: the first claim ever, epoch 1, nothing processed yet.
    a = await loops.start()
    await take_partitions(a, [tp])
    assert await offset_row(db, environment) == (NO_OFFSET, 1)
    assert a.epochs == {PARTITION: 1}
    assert a.positions == {PARTITION: 0}

    # (b) Payments arrive; A fetches them but does not process them yet: a stale batch once B claims.
    await produce(environment, requests("first", first))
    stale = await fetch(a, tp, first)
    assert [r.offset for r in stale[tp]] == list(range(first))

    # (c) B takes the partition (epoch 2), fetches the same records and processes them: applied.
    b = await loops.start()
    await take_partitions(b, [tp])
    assert await offset_row(db, environment) == (NO_OFFSET, 2)
    assert b.epochs == {PARTITION: 2}
    await b.process_batch(await fetch(b, tp, first))
    assert (b.stats.batches, b.stats.records, b.stats.fenced) == (1, first, 0)
    assert await offset_row(db, environment) == (first, 2)
    assert await b.consumer.committed(tp) == first
    decided_by_b = await decisions(db, "first")
    assert [row[0] for row in decided_by_b] == [f"first-{i:03d}" for i in range(first)]
    assert all(row[1] is not None and row[4] is not None for row in decided_by_b), decided_by_b
    outputs_after_b = await outputs_on_kafka(environment, b)
    assert outputs_after_b == first

    # (d) A processes its stale batch: fenced. Nothing it decided is stored, nothing produced,
    # and its position is back at the batch start so the batch is never skipped.
    await a.process_batch(stale)
    assert a.stats.fenced == 1
    assert (a.stats.batches, a.stats.records, a.stats.outputs) == (0, 0, 0)
    assert a.fenced == {PARTITION}
    assert a.epochs == {PARTITION: 1}
    assert await a.consumer.position(tp) == 0
    assert await offset_row(db, environment) == (first, 2)
    assert await decisions(db, "first") == decided_by_b  # same rows, B's assessed_at
    assert await outputs_on_kafka(environment, a) == outputs_after_b
    assert await a.consumer.committed(tp) == first

    # (e) Recovery: A proves it is still assigned and claims again (epoch 3), resuming where B stopped.
    await reclaim_fenced(a)
    assert a.stats.reclaims == 1
    assert a.fenced == set()
    assert await offset_row(db, environment) == (first, 3)
    assert a.epochs == {PARTITION: 3}
    assert a.positions == {PARTITION: first}
    assert await a.consumer.position(tp) == first

    # A's next batch (new records) is applied under epoch 3.
    await produce(environment, requests("more", more))
    await a.process_batch(await fetch(a, tp, more, from_offset=first))
    assert (a.stats.batches, a.stats.records, a.stats.fenced) == (1, more, 1)
    assert await offset_row(db, environment) == (first + more, 3)
    assert await a.consumer.committed(tp) == first + more
    decided_by_a = await decisions(db, "more")
    assert len(decided_by_a) == more
    assert all(row[1] is not None and row[4] is not None for row in decided_by_a), decided_by_a

    # ...and B, which still believes it owns the partition under epoch 2, is fenced on the same records.
    assert await b.consumer.position(tp) == first
    await b.process_batch(await fetch(b, tp, more, from_offset=first))
    assert b.stats.fenced == 1
    assert (b.stats.batches, b.stats.records) == (1, first)
    assert b.fenced == {PARTITION}
    assert await b.consumer.position(tp) == first
    assert await offset_row(db, environment) == (first + more, 3)
    assert await decisions(db, "more") == decided_by_a
    assert await decisions(db, "first") == decided_by_b
    assert await outputs_on_kafka(environment, a) == first + more


async def test_a_fenced_batch_rolls_back_the_decisions_it_made(environment: Settings, loops: Loops, db: Any) -> None:
    """The stale owner decides first this time: its fresh decisions must vanish with the fenced transaction."""
    tp = loops.tp
    count = 6
    a = await loops.start()
    await take_partitions(a, [tp])
    await produce(environment, requests("rollback", count))
    stale = await fetch(a, tp, count)
    totals_before = await db.fetch("SELECT * FROM risk_merchant_day_totals ORDER BY 1, 2, 3")

    b = await loops.start()
    await take_partitions(b, [tp])  # claimed, not processed yet
    assert await offset_row(db, environment) == (NO_OFFSET, 2)

    await a.process_batch(stale)  # risk decides all six fresh, then advance finds epoch 2
    assert a.stats.fenced == 1
    assert a.fenced == {PARTITION}
    assert await a.consumer.position(tp) == 0
    assert await decisions(db, "rollback") == []
    assert await db.fetch("SELECT * FROM risk_merchant_day_totals ORDER BY 1, 2, 3") == totals_before
    assert await offset_row(db, environment) == (NO_OFFSET, 2)
    assert await outputs_on_kafka(environment, a) == 0

    await b.process_batch(await fetch(b, tp, count))
    assert (b.stats.batches, b.stats.records) == (1, count)
    assert len(await decisions(db, "rollback")) == count
    assert await offset_row(db, environment) == (count, 2)


async def test_records_fetched_before_a_claims_seek_are_not_applied_twice(
    environment: Settings, loops: Loops, db: Any
) -> None:
    """A batch fetched before the partition was claimed again (at a later position) is dropped, not re-applied."""
    tp = loops.tp
    count = 5
    a = await loops.start()
    await take_partitions(a, [tp])
    await produce(environment, requests("seek", count))
    early = await fetch(a, tp, count)

    b = await loops.start()
    await take_partitions(b, [tp])
    await b.process_batch(await fetch(b, tp, count))
    assert await offset_row(db, environment) == (count, 2)
    applied = await decisions(db, "seek")
    assert len(applied) == count
    outputs = await outputs_on_kafka(environment, b)

    # The partition comes back to A (a rebalance): its claim seeks to where B stopped.
    await take_partitions(a, [tp])
    assert a.epochs == {PARTITION: 3}
    assert a.positions == {PARTITION: count}
    assert await a.consumer.position(tp) == count
    claimed_at = await db.fetchval("SELECT updated_at FROM stage_offsets WHERE partition = $1", PARTITION)

    # A's batch fetched before that seek: under the current epoch it would not be fenced, so only the
    # filter keeps it from being applied, advanced and produced a second time.
    await a.process_batch(early)
    # Counted where a second application would show: the events produced, the offset row's last write.
    assert await outputs_on_kafka(environment, a) == outputs
    assert await db.fetchval("SELECT updated_at FROM stage_offsets WHERE partition = $1", PARTITION) == claimed_at
    assert await decisions(db, "seek") == applied
    assert await db.fetchval("SELECT count(*) FROM risk_decisions") == count
    assert await offset_row(db, environment) == (count, 3)
    assert (a.stats.batches, a.stats.records, a.stats.outputs, a.stats.fenced) == (0, 0, 0, 0)
    assert await a.consumer.committed(tp) == count


# -- fencing.advance and claim_partitions, directly --------------------------------------------

GROUP = "fencing-direct"
TOPIC = "fencing-direct-topic"


async def _rows(db: Any) -> dict[int, tuple[int, int]]:
    rows = await db.fetch(
        "SELECT partition, next_offset, epoch FROM stage_offsets WHERE group_id = $1 AND topic = $2", GROUP, TOPIC
    )
    return {row["partition"]: (row["next_offset"], row["epoch"]) for row in rows}


async def test_claim_takes_epoch_one_for_a_new_row_and_epoch_plus_one_for_an_existing_one(db: Any) -> None:
    first = await claim_partitions(db, GROUP, TOPIC, [0])
    assert (first[0].next_offset, first[0].epoch) == (NO_OFFSET, 1)
    await advance(db, GROUP, TOPIC, {0: (0, 40)}, {0: 1})

    both = await claim_partitions(db, GROUP, TOPIC, [0, 1])
    assert {p: (c.next_offset, c.epoch) for p, c in both.items()} == {0: (40, 2), 1: (NO_OFFSET, 1)}
    again = await claim_partitions(db, GROUP, TOPIC, [1])
    assert (again[1].next_offset, again[1].epoch) == (NO_OFFSET, 2)
    # Another group's row for the same topic and partition is its own.
    other = await claim_partitions(db, "fencing-other-group", TOPIC, [0])
    assert other[0].epoch == 1
    assert await _rows(db) == {0: (40, 2), 1: (NO_OFFSET, 2)}


async def _dead_letter_and_advance(db: Any, spans: dict[int, tuple[int, int]], epochs: dict[int, int]) -> None:
    """One transaction like a batch's: another write first, then the fenced advance."""
    refused = [Refused(Origin(TOPIC, 0, 10), "$", "test", "written in the fenced transaction", b"x")]
    async with db.transaction():
        await store_dead_letters(db, "fencing-test", refused, await db.fetchval("SELECT now()"))
        await advance(db, GROUP, TOPIC, spans, epochs)


async def test_advance_under_a_stale_epoch_raises_naming_the_partition_and_rolls_back(db: Any) -> None:
    claims = await claim_partitions(db, GROUP, TOPIC, [0, 1, 2])
    epochs = {p: c.epoch for p, c in claims.items()}
    await advance(db, GROUP, TOPIC, {0: (0, 10), 1: (0, 10), 2: (0, 10)}, epochs)
    await claim_partitions(db, GROUP, TOPIC, [1])  # another consumer takes partition 1: epoch 2
    before = await _rows(db)
    assert before == {0: (10, 1), 1: (10, 2), 2: (10, 1)}

    with pytest.raises(FencedError) as raised:
        await _dead_letter_and_advance(db, {0: (10, 20), 1: (10, 20), 2: (10, 20)}, epochs)
    assert raised.value.partitions == [1]
    assert "[1]" in str(raised.value)
    # Partitions 0 and 2 were ours, and their advance rolled back with the dead letter.
    assert await _rows(db) == before
    assert await db.fetchval("SELECT count(*) FROM dead_letters WHERE stage = 'fencing-test'") == 0

    # A partition this consumer never claimed (no epoch), or with no row at all, is fenced too.
    with pytest.raises(FencedError) as unclaimed:
        async with db.transaction():
            await advance(db, GROUP, TOPIC, {0: (10, 20), 7: (0, 5)}, {0: 1, 7: 1})
    assert unclaimed.value.partitions == [7]
    with pytest.raises(FencedError) as no_epoch:
        async with db.transaction():
            await advance(db, GROUP, TOPIC, {2: (10, 20)}, {})
    assert no_epoch.value.partitions == [2]
    assert await _rows(db) == before


async def test_advance_is_monotonic_and_allows_gaps(db: Any) -> None:
    claims = await claim_partitions(db, GROUP, TOPIC, [0])
    epochs = {0: claims[0].epoch}
    await advance(db, GROUP, TOPIC, {0: (0, 100)}, epochs)
    assert await _rows(db) == {0: (100, 1)}
    # A replayed span ending before the stored next offset leaves it where it is (and is not fenced).
    await advance(db, GROUP, TOPIC, {0: (40, 60)}, epochs)
    assert await _rows(db) == {0: (100, 1)}
    await advance(db, GROUP, TOPIC, {0: (100, 100)}, epochs)
    assert await _rows(db) == {0: (100, 1)}
    # Offsets may skip: a span starting past the stored next offset still advances.
    await advance(db, GROUP, TOPIC, {0: (130, 150)}, epochs)
    assert await _rows(db) == {0: (150, 1)}


# -- the running loop: fenced by someone who is gone, it claims again and goes on -----------------

RUN_WAIT_S = 120.0


async def _until(what: str, check: Any, wait_s: float = RUN_WAIT_S) -> None:
    deadline = time.monotonic() + wait_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {wait_s:.0f} s")
        await asyncio.sleep(0.1)


async def test_the_running_loop_reclaims_a_partition_fenced_by_a_consumer_that_is_gone(
    environment: Settings, pool: Any, db: Any
) -> None:
    """Without the re-claim, the loop would be fenced on every batch of that partition, forever."""
    partitions = topic_spec(PAYMENTS_REQUESTED).partitions
    await wait_partitions_led(environment, PAYMENTS_REQUESTED)
    loop: StageLoop[Any] = StageLoop(build_stage("risk", environment), environment, pool)
    stop = asyncio.Event()
    running = asyncio.create_task(loop.run(stop))

    async def decided(count: int) -> bool:
        if running.done():
            raise AssertionError(
                f"the loop ended: {running.result() if not running.exception() else running.exception()!r}"
            )
        return int(await db.fetchval("SELECT count(*) FROM risk_decisions")) >= count

    async def claimed() -> bool:
        return len(loop.epochs) == partitions and not running.done()

    try:
        await _until("the loop claims every partition", claimed)
        epoch = loop.epochs[PARTITION]
        await produce(environment, requests("before", 2))
        await _until("2 decisions", lambda: decided(2))
        assert await offset_row(db, environment) == (2, epoch)

        # Another consumer claims the partition (epoch + 1) and dies before processing anything.
        await claim_partitions(db, environment.group("risk"), environment.topic(PAYMENTS_REQUESTED), [PARTITION])
        await produce(environment, requests("after", 3))
        await _until("5 decisions", lambda: decided(5))
        assert len(await decisions(db, "after")) == 3
        assert await offset_row(db, environment) == (5, epoch + 2)
        assert (loop.stats.fenced, loop.stats.reclaims) == (1, 1), loop.stats
        assert loop.epochs[PARTITION] == epoch + 2
    finally:
        stop.set()
        await asyncio.wait_for(running, RUN_WAIT_S)
