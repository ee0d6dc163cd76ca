"""The stage loop: the one place where offsets are committed.

For each batch the consumer returns:
  Step 1. decode and validate every record; invalid ones become dead letters;
  Step 2. in ONE PostgreSQL transaction: the stage applies the batch with
          set-based SQL, dead letters are stored, and each partition's offset
          row advances under this consumer's epoch (fencing);
  Step 3. produce the stage's events and the dead letters (idempotent
          producer, acks=all) and wait for every acknowledgement;
  Step 4. commit the consumed offsets to Kafka.
A crash between any two steps replays the batch from the last Kafka commit:
Step 2 then writes nothing new and returns the same events, Step 3 sends them
again with the same event ids, and the next stage ignores the repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic

import asyncpg
import structlog
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
)

from paystream.errors import PaystreamError
from paystream.kafka import make_consumer, make_producer, send_in_batches
from paystream.settings import Settings
from paystream.stage.contract import Accepted, E, Origin, Output, Refused, Stage, StageResult
from paystream.stage.crash import CrashSwitch
from paystream.stage.dead_letters import dead_letter_outputs, store_dead_letters
from paystream.stage.fencing import NO_OFFSET, FencedError, advance, claim_partitions
from schemas.codec import Decoder, Invalid, encode

log = structlog.get_logger("paystream.stage")

# SQLSTATEs worth a retry: serialization failure, deadlock, admin shutdown,
# crash shutdown, cannot connect now, too many connections.
RETRIABLE_SQLSTATES = frozenset({"40001", "40P01", "57P01", "57P02", "57P03", "53300", "08000", "08003", "08006"})


class RetriesExhaustedError(PaystreamError):
    """A transient failure outlasted retry_duration_ms_max; the worker exits without committing."""


@dataclass(slots=True)
class Activity:
    """When any loop of a pipeline last did work: burst mode stops once all were idle together."""

    last: float = field(default_factory=time.monotonic)

    def touch(self) -> None:
        self.last = time.monotonic()


@dataclass(slots=True)
class LoopStats:
    batches: int = 0
    records: int = 0
    dead_letters: int = 0
    outputs: int = 0
    fenced: int = 0
    retries: int = 0
    commit_failures: int = 0
    rebalances: int = 0
    ticks: int = 0
    started_at: float = field(default_factory=time.monotonic)


def is_retriable(error: BaseException) -> bool:
    """Broker or database unavailable: retry. Anything else is a bug or bad state: crash."""
    if isinstance(error, PaystreamError):
        return error.retriable
    if isinstance(error, KafkaError):
        return bool(getattr(error, "retriable", False)) or isinstance(error, KafkaConnectionError)
    if isinstance(error, asyncpg.PostgresError):
        return getattr(error, "sqlstate", None) in RETRIABLE_SQLSTATES
    return isinstance(
        error,
        OSError | asyncio.TimeoutError | asyncpg.InterfaceError | asyncpg.PostgresConnectionError,
    )


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Revocation waits for the batch in flight; assignment claims epochs and seeks."""

    def __init__(self, loop: StageLoop[Any]) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # The batch in flight finishes its four steps (and commits) before the
        # rebalance goes on, so the new owner starts exactly after it.
        async with self.loop.batch_lock:
            for tp in revoked:
                self.loop.epochs.pop(tp.partition, None)
                self.loop.positions.pop(tp.partition, None)
        log.info("partitions revoked", stage=self.loop.stage.name, partitions=_parts(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.loop.stats.rebalances += 1
        if assigned:
            await self.loop.take_partitions(assigned)
        log.info("partitions assigned", stage=self.loop.stage.name, partitions=_parts(assigned))


def resume_position(kafka_committed: int | None, database_next: int, log_start: int) -> int:
    """Where a newly assigned partition resumes: the earliest offset that may lack its events.

    No Kafka commit means "from the beginning", not "from the database":
    a worker killed after its first batch's transaction but before its first
    offset commit has a database offset and no Kafka offset, and that batch's
    events may never have been produced. Replaying it is idempotent.
    """
    kafka_next = log_start if kafka_committed is None else kafka_committed
    candidates = [kafka_next] if database_next == NO_OFFSET else [kafka_next, database_next]
    return max(min(candidates), log_start)


def _parts(tps: Sequence[TopicPartition]) -> list[int]:
    return sorted(tp.partition for tp in tps)


class StageLoop(Generic[E]):
    """Runs one stage against Kafka and PostgreSQL until stopped (or idle, in burst mode)."""

    def __init__(self, stage: Stage[E], settings: Settings, pool: Any) -> None:
        self.stage = stage
        self.settings = settings
        self.pool = pool
        self.topic = settings.topic(stage.input_topic)
        self.group_id = settings.group(stage.name)
        self.client_id = f"paystream-{stage.name}-{socket.gethostname()}-{os.getpid()}"
        self.decoder = Decoder(stage.input_type, settings.record_bytes_max)
        self.crash = CrashSwitch(settings, stage.name)
        self.batch_lock = asyncio.Lock()
        self.epochs: dict[int, int] = {}
        # Next offset each claimed partition must continue from: records
        # fetched before a claim's seek are stale and are dropped.
        self.positions: dict[int, int] = {}
        self.stats = LoopStats()
        self.consumer = make_consumer(settings, self.group_id, self.client_id)
        self.producer = make_producer(settings, self.client_id)
        self._last_tick = 0.0
        self.activity = Activity()

    # -- assignment ---------------------------------------------------------

    async def take_partitions(self, assigned: Sequence[TopicPartition]) -> None:
        """Claim a new epoch per partition and seek to where nothing can be missed.

        Kafka's committed offset trails PostgreSQL's by at most the batch whose
        events may not have been produced yet, so resuming at the smaller of the
        two replays that batch (its effects are idempotent) and re-sends its events.
        Holds the batch lock: aiokafka may already be fetching for these
        partitions, and no batch may run for them until they are claimed.
        """
        async with self.batch_lock:
            claims = await self._retrying("claim partitions", lambda: self._claim([tp.partition for tp in assigned]))
            beginnings = await self.consumer.beginning_offsets(list(assigned))
            for tp in assigned:
                claim = claims[tp.partition]
                committed = await self.consumer.committed(tp)
                position = resume_position(committed, claim.next_offset, beginnings[tp])
                if committed is not None and claim.next_offset != NO_OFFSET and committed > claim.next_offset:
                    log.warning(
                        "kafka offset ahead of database; resuming from the database",
                        stage=self.stage.name,
                        partition=tp.partition,
                        kafka_offset=committed,
                        database_offset=claim.next_offset,
                    )
                self.consumer.seek(tp, position)
                self.epochs[tp.partition] = claim.epoch
                self.positions[tp.partition] = position
            self.activity.touch()

    async def _claim(self, partitions: list[int]) -> Any:
        async with self.pool.acquire() as connection:
            return await claim_partitions(connection, self.group_id, self.topic, partitions)

    # -- the loop -------------------------------------------------------------

    async def run(
        self,
        stop: asyncio.Event | None = None,
        idle_exit_ms: int | None = None,
        activity: Activity | None = None,
    ) -> LoopStats:
        """Process until `stop` is set; with `idle_exit_ms`, also return once idle that long.

        `activity` may be shared by the loops of one pipeline, so that in burst
        mode a downstream stage waits while an upstream stage still works.
        """
        stop = stop or asyncio.Event()
        self.activity = activity or self.activity
        await self._retrying("connect to Kafka", self._start_clients)
        self.consumer.subscribe([self.topic], listener=_Listener(self))
        log.info("stage started", stage=self.stage.name, topic=self.topic, group=self.group_id)
        self.activity.touch()
        try:
            while not stop.is_set():
                batch = await self.consumer.getmany(
                    timeout_ms=self.settings.batch_wait_ms, max_records=self.settings.batch_records_max
                )
                records = [r for tp_records in batch.values() for r in tp_records]
                if records:
                    await self.process_batch(batch)
                    self.activity.touch()
                if await self._maybe_tick():
                    self.activity.touch()
                if idle_exit_ms is not None and self._idle_long_enough(idle_exit_ms):
                    break
        finally:
            await self._shutdown()
        return self.stats

    async def _start_clients(self) -> None:
        """Start fresh clients: a worker (re)started while the broker restarts waits for it."""
        # The clients made earlier (in __init__ or by a failed attempt) never
        # started; closing them releases them instead of leaking sockets and tasks.
        await self.consumer.stop()
        await self.producer.stop()
        self.consumer = make_consumer(self.settings, self.group_id, self.client_id)
        self.producer = make_producer(self.settings, self.client_id)
        try:
            await self.producer.start()
            await self.consumer.start()
        except BaseException:
            await self.consumer.stop()
            await self.producer.stop()
            raise

    def _idle_long_enough(self, idle_exit_ms: int) -> bool:
        """Burst mode: idle that long, and only once partitions were assigned (else nothing ran yet)."""
        idle_ms = (time.monotonic() - self.activity.last) * 1000
        return idle_ms >= idle_exit_ms and bool(self.consumer.assignment())

    async def _shutdown(self) -> None:
        # Every processed batch was committed inside process_batch: stopping
        # here loses nothing. Stop the consumer first so no new batch starts.
        try:
            await self.consumer.stop()
        finally:
            await self.producer.stop()
        log.info("stage stopped", stage=self.stage.name, **_stats_fields(self.stats))

    async def process_batch(self, batch: dict[TopicPartition, list[Any]]) -> None:
        async with self.batch_lock:
            # Keep only records at or after where this consumer's claim says to
            # resume (offsets may skip: transaction markers). Records of
            # partitions revoked since getmany returned belong to the new owner;
            # records fetched again after a claim's seek were already applied.
            assignment = self.consumer.assignment()
            owned = {}
            for tp, tp_records in batch.items():
                position = self.positions.get(tp.partition)
                if tp in assignment and position is not None:
                    fresh = [r for r in tp_records if r.offset >= position]
                    if fresh:
                        owned[tp] = fresh
            if not owned:
                return
            self.crash.batch_started()
            now = datetime.now(UTC)

            # Step 1: decode and validate.
            accepted: list[Accepted[E]] = []
            refused: list[Refused] = []
            for tp, tp_records in owned.items():
                for record in tp_records:
                    origin = Origin(tp.topic, tp.partition, record.offset)
                    decoded = self.decoder.decode(record.value)
                    if isinstance(decoded, Invalid):
                        refused.append(
                            Refused(origin, decoded.field, decoded.rule, decoded.detail, record.value or b"")
                        )
                    else:
                        accepted.append(Accepted(origin, decoded))
            spans = {tp.partition: (rs[0].offset, rs[-1].offset + 1) for tp, rs in owned.items()}
            self.crash.at("after_decode")

            # Step 2: one transaction for the whole batch, fenced by epoch.
            try:
                result = await self._retrying("apply batch", lambda: self._apply(accepted, refused, spans, now))
            except FencedError as fenced:
                self.stats.fenced += 1
                log.warning(
                    "batch fenced: another consumer owns the partitions now",
                    stage=self.stage.name,
                    partitions=fenced.partitions,
                )
                self._rewind(owned)
                return
            self.crash.at("after_db_commit")

            # Step 3: produce and await every acknowledgement.
            outputs = result.outputs + dead_letter_outputs(self.stage.name, result.refused, now)
            await self._retrying("produce", lambda: self._produce(outputs))
            self.crash.at("after_produce")

            # Step 4: commit the consumed offsets.
            await self._commit({tp: rs[-1].offset + 1 for tp, rs in owned.items()})
            for tp, rs in owned.items():
                self.positions[tp.partition] = rs[-1].offset + 1
            self.crash.at("after_offset_commit")

            self.stats.batches += 1
            self.stats.records += sum(len(rs) for rs in owned.values())
            self.stats.dead_letters += len(result.refused)
            self.stats.outputs += len(outputs)

    async def _apply(
        self,
        accepted: list[Accepted[E]],
        refused: list[Refused],
        spans: dict[int, tuple[int, int]],
        now: datetime,
    ) -> StageResult:
        async with self.pool.acquire() as connection, connection.transaction():
            result = await self.stage.apply(connection, accepted, now) if accepted else StageResult()
            result.refused[:0] = refused
            await store_dead_letters(connection, self.stage.name, result.refused, now)
            await advance(connection, self.group_id, self.topic, spans, self.epochs)
            self.crash.at("in_transaction")
        return result

    async def _produce(self, outputs: Sequence[Output]) -> None:
        futures = await send_in_batches(
            self.producer,
            ((self.settings.topic(output.topic), output.key.encode(), encode(output.event)) for output in outputs),
        )
        if futures:
            await asyncio.wait_for(asyncio.gather(*futures), timeout=self.settings.produce_timeout_ms / 1000)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as error:
            # The group rebalanced under us: the partitions belong to another
            # member, which resumes from the previous commit and replays this
            # batch harmlessly. Not ignored: counted, logged, and the loop
            # stops trusting its assignment until the rebalance completes.
            self.stats.commit_failures += 1
            log.warning(
                "offset commit failed after a rebalance; the new owner replays the batch",
                stage=self.stage.name,
                error=str(error),
            )

    def _rewind(self, batch: dict[TopicPartition, list[Any]]) -> None:
        """Seek back to the batch start so a fenced batch is never skipped."""
        for tp, records in batch.items():
            # No longer assigned: its new owner resumes from the commit.
            with contextlib.suppress(IllegalStateError):
                self.consumer.seek(tp, records[0].offset)

    async def _maybe_tick(self) -> bool:
        interval_s = self.settings.settlement_close_interval_ms / 1000
        if time.monotonic() - self._last_tick < interval_s:
            return False
        self._last_tick = time.monotonic()
        async with self.batch_lock:
            tick = await self._retrying("tick", lambda: self.stage.tick(self.pool, datetime.now(UTC)))
            if tick is None:
                return False
            await self._retrying("produce tick", lambda: self._produce(tick.outputs))
            await self._retrying("confirm tick", tick.on_delivered)
            self.stats.ticks += 1
            self.stats.outputs += len(tick.outputs)
            return True

    async def _retrying(self, what: str, attempt: Any) -> Any:
        """Run `attempt()` until it succeeds, retrying transient failures with capped backoff."""
        backoff_ms = self.settings.retry_backoff_ms_initial
        deadline = time.monotonic() + self.settings.retry_duration_ms_max / 1000
        while True:
            try:
                return await attempt()
            except FencedError:
                raise
            except Exception as error:
                if not is_retriable(error):
                    raise
                if time.monotonic() >= deadline:
                    raise RetriesExhaustedError(
                        f"{what} kept failing for {self.settings.retry_duration_ms_max} ms: {error}"
                    ) from error
                self.stats.retries += 1
                log.warning(
                    "transient failure, retrying",
                    stage=self.stage.name,
                    action=what,
                    error=f"{type(error).__name__}: {error}",
                    backoff_ms=backoff_ms,
                )
                await asyncio.sleep(backoff_ms / 1000)
                backoff_ms = min(backoff_ms * 2, self.settings.retry_backoff_ms_max)


def _stats_fields(stats: LoopStats) -> dict[str, Any]:
    return {
        "batches": stats.batches,
        "records": stats.records,
        "dead_letters": stats.dead_letters,
        "outputs": stats.outputs,
        "fenced": stats.fenced,
        "retries": stats.retries,
        "commit_failures": stats.commit_failures,
        "rebalances": stats.rebalances,
    }
