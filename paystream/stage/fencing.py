"""Per-partition offsets and owner epochs in PostgreSQL.

On assignment a consumer takes a new epoch for each partition; each batch
transaction then moves the partition's next offset only while that epoch is
still current. A consumer that lost a partition (and missed its revocation,
e.g. after a long pause) therefore cannot write once the new owner took over:
its batch transaction fails and rolls back every effect it made.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

NO_OFFSET = -1


class FencedError(Exception):
    """This consumer no longer owns a partition it tried to advance."""

    def __init__(self, partitions: Sequence[int]) -> None:
        super().__init__(f"fenced on partitions {sorted(partitions)}")
        self.partitions = list(partitions)


@dataclass(frozen=True, slots=True)
class Claim:
    partition: int
    next_offset: int  # NO_OFFSET when nothing was ever processed
    epoch: int


async def claim_partitions(connection: Any, group_id: str, topic: str, partitions: Sequence[int]) -> dict[int, Claim]:
    """Take a new epoch for each partition; returns where PostgreSQL says to resume."""
    rows = await connection.fetch(
        """
        INSERT INTO stage_offsets AS o (group_id, topic, partition, next_offset, epoch)
        SELECT $1, $2, p, $4, 1 FROM unnest($3::int[]) AS p
        ON CONFLICT (group_id, topic, partition)
        DO UPDATE SET epoch = o.epoch + 1, updated_at = now()
        RETURNING partition, next_offset, epoch
        """,
        group_id,
        topic,
        list(partitions),
        NO_OFFSET,
    )
    return {row["partition"]: Claim(row["partition"], row["next_offset"], row["epoch"]) for row in rows}


async def advance(
    connection: Any,
    group_id: str,
    topic: str,
    spans: Mapping[int, tuple[int, int]],
    epochs: Mapping[int, int],
) -> None:
    """Move each partition's next offset to the end of its span, or raise FencedError.

    `spans` maps partition -> (first offset in the batch, last offset + 1). The
    update applies only where the epoch is ours. Offsets are not required to be
    contiguous: transaction markers and compaction leave legitimate gaps.
    """
    partitions = sorted(spans)
    rows = await connection.fetch(
        """
        UPDATE stage_offsets AS o
        SET next_offset = greatest(o.next_offset, v.end_offset), updated_at = now()
        FROM unnest($3::int[], $4::bigint[], $5::bigint[], $6::bigint[])
             AS v(partition, start_offset, end_offset, epoch)
        WHERE o.group_id = $1 AND o.topic = $2 AND o.partition = v.partition
          AND o.epoch = v.epoch
        RETURNING o.partition
        """,
        group_id,
        topic,
        partitions,
        [spans[p][0] for p in partitions],
        [spans[p][1] for p in partitions],
        [epochs.get(p, 0) for p in partitions],
    )
    advanced = {row["partition"] for row in rows}
    if advanced != set(partitions):
        raise FencedError([p for p in partitions if p not in advanced])
