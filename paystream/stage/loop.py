"""The stage loop: decode, one transaction, produce, and the offsets handed over for commit.

For each batch the consumer returns:
  Step 1. decode and validate every record; invalid ones become dead letters;
  Step 2. in ONE PostgreSQL transaction: the stage applies the batch with
          set-based SQL, dead letters are stored, and each partition's offset
          row advances under this consumer's epoch (fencing);
  Step 3. produce the stage's events and the dead letters (idempotent
          producer, acks=all) and wait for every acknowledgement;
  Step 4. hand the consumed offsets over for a Kafka commit, which runs in
          the background at most every `offset_commit_interval_ms`
          (`paystream.stage.commits`).
A crash between any two steps replays from the last Kafka commit: Step 2 then
writes nothing new for the batches already stored and returns the same
events, Step 3 sends them again with the same event ids, and the next stage
ignores the repeats.

A record that makes Step 2 fail for a reason of its own (not an outage) is
isolated and dead-lettered inside the same transaction
(`paystream.stage.isolation`); partition ownership lives in
`paystream.stage.membership`, failure classes in `paystream.stage.retry`,
Step 3's producer calls in `paystream.stage.delivery`, the stage's timer in
`paystream.stage.tick`, and what a batch took (for the metrics) in
`paystream.stage.observe`.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Generic

import structlog
from aiokafka import TopicPartition

from paystream.kafka import make_consumer, make_producer
from paystream.settings import Settings
from paystream.stage.commits import OffsetCommitter
from paystream.stage.contract import Accepted, E, Refused, Stage, StageResult
from paystream.stage.crash import CrashSwitch
from paystream.stage.dead_letters import dead_letter_outputs, store_dead_letters
from paystream.stage.delivery import produce, rewind
from paystream.stage.fencing import FencedError, advance
from paystream.stage.intake import decode_records, owned_records
from paystream.stage.isolation import abandon_poisoned, apply_isolating, poison_refusals
from paystream.stage.membership import PartitionListener, reclaim_fenced, resume_position
from paystream.stage.observe import BatchObservations
from paystream.stage.retry import (
    RETRIABLE_SQLSTATES,
    Retrier,
    RetriesExhaustedError,
    StopRequestedError,
    is_retriable,
)
from paystream.stage.stats import Activity, LoopStats, stats_fields
from paystream.stage.tick import maybe_tick
from schemas.codec import Decoder

__all__ = [
    "RETRIABLE_SQLSTATES",
    "Activity",
    "LoopStats",
    "RetriesExhaustedError",
    "StageLoop",
    "is_retriable",
    "resume_position",
]

log = structlog.get_logger("paystream.stage")


class StageLoop(Generic[E]):
    """Runs one stage against Kafka and PostgreSQL until stopped (or idle, in burst mode)."""

    def __init__(self, stage: Stage[E], settings: Settings, pool: Any) -> None:
        self.stage = stage
        self.settings = settings
        self.pool = pool
        self.topic = settings.topic(stage.input_topic)
        self.group_id = settings.group(stage.name)
        self.client_id = f"paystream-{stage.name}-{socket.gethostname()}-{os.getpid()}"
        # A stage whose topic carries several contracts names them all (`input_types`).
        input_types = getattr(stage, "input_types", None) or stage.input_type
        self.decoder = Decoder(input_types, settings.record_bytes_max, admit=getattr(stage, "admit", None))
        self.observed = BatchObservations(input_types if isinstance(input_types, tuple) else (input_types,))
        self.crash = CrashSwitch(settings, stage.name)
        self.batch_lock = asyncio.Lock()
        self.epochs: dict[int, int] = {}
        # Next offset each claimed partition must continue from: records
        # fetched before a claim's seek are stale and are dropped.
        self.positions: dict[int, int] = {}
        # Partitions whose last batch was fenced: claimed again before the next batch.
        self.fenced: set[int] = set()
        # An error the rebalance listener could not raise itself (aiokafka swallows it).
        self.fatal: BaseException | None = None
        self.stats = LoopStats()
        self.consumer = make_consumer(settings, self.group_id, self.client_id)
        self.producer = make_producer(settings, self.client_id)
        self.last_tick = 0.0
        self.activity = Activity()
        self.retry = Retrier(settings, stage.name, asyncio.Event(), self._count_retry)
        self.committer = OffsetCommitter(
            stage.name,
            lambda: self.consumer,
            settings.offset_commit_interval_ms,
            on_rebalanced=self._count_commit_failure,
            on_committed=lambda: self.crash.at("after_offset_commit"),
        )

    def _count_commit_failure(self) -> None:
        self.stats.commit_failures += 1

    def _count_retry(self) -> None:
        # A retry attempt is progress for /healthz: the loop is alive, waiting out an outage.
        self.stats.retries += 1
        self.stats.progress_at = time.monotonic()

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
        self.retry = Retrier(self.settings, self.stage.name, stop, self._count_retry)
        try:
            await self.retry("connect to Kafka", self._start_clients)
        except StopRequestedError:
            await self._close_clients()
            log.info("stage stopped before it connected", stage=self.stage.name)
            return self.stats
        self.consumer.subscribe([self.topic], listener=PartitionListener(self))
        log.info("stage started", stage=self.stage.name, topic=self.topic, group=self.group_id)
        self.activity.touch()
        try:
            while not stop.is_set():
                self.stats.progress_at = time.monotonic()
                self._raise_if_fatal()
                if self.fenced:
                    await reclaim_fenced(self)
                batch = await self.consumer.getmany(
                    timeout_ms=self.settings.batch_wait_ms, max_records=self.settings.batch_records_max
                )
                self._raise_if_fatal()
                if any(batch.values()):
                    await self.process_batch(batch)
                    self.activity.touch()
                self.committer.maybe_start()
                if await maybe_tick(self):
                    self.activity.touch()
                if idle_exit_ms is not None and self._idle_long_enough(idle_exit_ms):
                    break
        except StopRequestedError as stopped:
            # Nothing of the attempt was committed: the batch is replayed by
            # whoever owns the partition next.
            log.info("stage stopped while retrying", stage=self.stage.name, reason=str(stopped))
        finally:
            await self._shutdown()
        return self.stats

    def _raise_if_fatal(self) -> None:
        if self.fatal is not None:
            raise self.fatal

    async def _start_clients(self) -> None:
        """Start fresh clients: a worker (re)started while the broker restarts waits for it."""
        # The clients made earlier (in __init__ or by a failed attempt) never
        # started; closing them releases them instead of leaking sockets and tasks.
        await self._close_clients()
        self.consumer = make_consumer(self.settings, self.group_id, self.client_id)
        self.producer = make_producer(self.settings, self.client_id)
        try:
            await self.producer.start()
            await self.consumer.start()
        except BaseException:
            await self._close_clients()
            raise

    async def _close_clients(self) -> None:
        try:
            await self.consumer.stop()
        finally:
            await self.producer.stop()

    def _idle_long_enough(self, idle_exit_ms: int) -> bool:
        """Burst mode: idle that long, and only once partitions were assigned (else nothing ran yet)."""
        idle_ms = (time.monotonic() - self.activity.last) * 1000
        return idle_ms >= idle_exit_ms and bool(self.consumer.assignment())

    async def _shutdown(self) -> None:
        # Every processed batch was stored and produced inside process_batch:
        # commit what was handed over, so the next owner need not replay it.
        # Stopping loses nothing either way.
        await self.committer.flush_at_stop()
        await self._close_clients()
        log.info("stage stopped", stage=self.stage.name, **stats_fields(self.stats))

    async def process_batch(self, batch: dict[TopicPartition, list[Any]]) -> None:
        async with self.batch_lock:
            owned = owned_records(batch, self.consumer.assignment(), self.positions, self.fenced)
            if not owned:
                return
            self.crash.batch_started()
            started = time.monotonic()
            now = datetime.now(UTC)

            # Step 1: decode and validate.
            accepted, refused = decode_records(self.decoder, owned)
            spans = {tp.partition: (rs[0].offset, rs[-1].offset + 1) for tp, rs in owned.items()}
            self.crash.at("after_decode")

            # Step 2: one transaction for the whole batch, fenced by epoch.
            try:
                result = await self.retry(
                    "apply batch", lambda: self._apply(accepted, refused, spans, now), passthrough=FencedError
                )
            except FencedError as fenced:
                self.stats.fenced += 1
                log.warning(
                    "batch fenced: another consumer owns the partitions now",
                    stage=self.stage.name,
                    partitions=fenced.partitions,
                )
                rewind(self.consumer, owned)
                self.fenced.update(fenced.partitions)
                return
            self.crash.at("after_db_commit")
            if self.committer.has_deferred():
                # An earlier batch's events are out but Kafka's offset is still before it.
                self.crash.at("after_db_commit_deferred")

            # Step 3: produce and await every acknowledgement.
            outputs = result.outputs + dead_letter_outputs(self.stage.name, result.refused, now)
            await self.retry("produce", lambda: produce(self.producer, self.settings, outputs))
            acked_at_s = time.time()
            self.crash.at("after_produce")

            # Step 4: the consumed offsets, for a Kafka commit now or in the background.
            self.committer.hand_over({tp: rs[-1].offset + 1 for tp, rs in owned.items()})
            for tp, rs in owned.items():
                self.positions[tp.partition] = rs[-1].offset + 1
            await self.committer.after_batch()

            records = sum(len(rs) for rs in owned.values())
            self.stats.batches += 1
            self.stats.records += records
            self.stats.dead_letters += len(result.refused)
            self.stats.outputs += len(outputs)
            self.stats.last_batch_at = time.monotonic()
            self.observed.batch(self.stats.last_batch_at - started, records, accepted, acked_at_s)

    async def _apply(
        self,
        accepted: list[Accepted[E]],
        refused: list[Refused],
        spans: dict[int, tuple[int, int]],
        now: datetime,
    ) -> StageResult:
        async with self.pool.acquire() as connection, connection.transaction():
            result = StageResult()
            if accepted:
                isolation = await apply_isolating(connection, self.stage, accepted, now)
                result = isolation.result
                if isolation.poisoned:
                    self.crash.at("in_isolation")
                    result.outputs.extend(await abandon_poisoned(connection, self.stage, isolation.poisoned, now))
                    result.refused.extend(poison_refusals(self.stage.name, isolation.poisoned))
                    self._log_isolation(len(accepted), isolation.poisoned, isolation.applies)
            result.refused[:0] = refused
            await store_dead_letters(connection, self.stage.name, result.refused, now)
            await advance(connection, self.group_id, self.topic, spans, self.epochs)
            self.crash.at("in_transaction")
        return result

    def _log_isolation(self, records: int, poisoned: Sequence[tuple[Accepted[E], BaseException]], applies: int) -> None:
        # Counted per attempt: a retried transaction isolates again and logs again.
        self.stats.isolations += 1
        self.stats.poisoned += len(poisoned)
        log.warning(
            "poison records isolated and dead-lettered",
            stage=self.stage.name,
            records=records,
            poisoned=len(poisoned),
            applies=applies,
            origins=[f"{r.origin.topic}/{r.origin.partition}/{r.origin.offset}" for r, _ in poisoned],
            errors=sorted({type(error).__name__ for _, error in poisoned}),
        )
