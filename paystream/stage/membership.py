"""Partition ownership: claiming epochs on assignment, resuming where nothing is missed, recovering from fencing.

aiokafka runs the rebalance listener inside its group coordinator and only
logs an exception raised there: a claim that failed would leave a partition
assigned but never processed. So the listener never raises; it hands the
error to the loop (`StageLoop.fatal`), which raises it at its next iteration
and the worker exits non-zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from paystream.stage.fencing import NO_OFFSET, claim_partitions

if TYPE_CHECKING:
    from paystream.stage.loop import StageLoop

log = structlog.get_logger("paystream.stage")


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


def partition_numbers(tps: Sequence[TopicPartition]) -> list[int]:
    return sorted(tp.partition for tp in tps)


class PartitionListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Revocation waits for the batch in flight; assignment claims epochs and seeks."""

    def __init__(self, loop: StageLoop[Any]) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # The batch in flight finishes its steps, and every offset handed over
        # is committed, before the rebalance goes on, so the new owner starts
        # exactly after the last batch whose events were produced.
        async with self.loop.batch_lock:
            try:
                await self.loop.committer.flush()
            except KafkaError as error:
                log.warning(
                    "offsets not committed before the rebalance; the new owner replays",
                    stage=self.loop.stage.name,
                    error=f"{type(error).__name__}: {error}",
                )
            for tp in revoked:
                self.loop.epochs.pop(tp.partition, None)
                self.loop.positions.pop(tp.partition, None)
                self.loop.fenced.discard(tp.partition)
        log.info("partitions revoked", stage=self.loop.stage.name, partitions=partition_numbers(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.loop.stats.rebalances += 1
        if assigned:
            try:
                await take_partitions(self.loop, assigned)
            except Exception as error:  # noqa: BLE001 - handed to the loop, which raises it
                log.error(
                    "could not claim assigned partitions; the worker stops",
                    stage=self.loop.stage.name,
                    partitions=partition_numbers(assigned),
                    error=f"{type(error).__name__}: {error}",
                )
                self.loop.fatal = error
                return
        log.info("partitions assigned", stage=self.loop.stage.name, partitions=partition_numbers(assigned))


async def take_partitions(loop: StageLoop[Any], assigned: Sequence[TopicPartition]) -> None:
    """Claim a new epoch per partition and seek to where nothing can be missed.

    Kafka's committed offset trails PostgreSQL's by the batches whose events
    may not have been produced yet, or were produced and their commit deferred
    (`paystream.stage.commits`), so resuming at the smaller of the two replays
    them (their effects are idempotent) and re-sends their events.
    Holds the batch lock: aiokafka may already be fetching for these
    partitions, and no batch may run for them until they are claimed.
    """
    async with loop.batch_lock:
        partitions = [tp.partition for tp in assigned]

        async def claim() -> Any:
            async with loop.pool.acquire() as connection:
                return await claim_partitions(connection, loop.group_id, loop.topic, partitions)

        claims = await loop.retry("claim partitions", claim)
        beginnings = await loop.consumer.beginning_offsets(list(assigned))
        for tp in assigned:
            granted = claims[tp.partition]
            committed = await loop.consumer.committed(tp)
            position = resume_position(committed, granted.next_offset, beginnings[tp])
            if committed is not None and granted.next_offset != NO_OFFSET and committed > granted.next_offset:
                log.warning(
                    "kafka offset ahead of database; resuming from the database",
                    stage=loop.stage.name,
                    partition=tp.partition,
                    kafka_offset=committed,
                    database_offset=granted.next_offset,
                )
            loop.consumer.seek(tp, position)
            loop.epochs[tp.partition] = granted.epoch
            loop.positions[tp.partition] = position
            loop.fenced.discard(tp.partition)
        loop.activity.touch()


async def reclaim_fenced(loop: StageLoop[Any]) -> None:
    """After a fenced batch: take the partitions back if Kafka still says they are ours.

    A fenced consumer that only rewound would be fenced again on every batch,
    forever, when its epoch was bumped by someone who is gone. Before claiming
    again it proves it is still a current group member by committing each
    partition's committed offset unchanged: a member that lost the partitions
    in a rebalance gets CommitFailedError and leaves the claim to the rebalance.
    """
    fenced = set(loop.fenced)
    loop.fenced.clear()
    assigned = [tp for tp in loop.consumer.assignment() if tp.partition in fenced]
    if not assigned:
        return
    try:
        # The offsets handed over go first, so the proof below does not move Kafka's offset back.
        await loop.committer.flush()
        committed = {tp: await loop.consumer.committed(tp) for tp in assigned}
        unchanged = {tp: offset for tp, offset in committed.items() if offset is not None}
        if unchanged:
            await loop.consumer.commit(unchanged)
    except (CommitFailedError, IllegalStateError, KafkaError) as error:
        log.warning(
            "fenced and no longer a current member; waiting for the rebalance",
            stage=loop.stage.name,
            partitions=sorted(fenced),
            error=f"{type(error).__name__}: {error}",
        )
        return
    loop.stats.reclaims += 1
    log.warning("fenced; claiming the partitions again", stage=loop.stage.name, partitions=sorted(fenced))
    await take_partitions(loop, assigned)
