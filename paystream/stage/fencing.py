"""Per-partition offsets and owner epochs in PostgreSQL.

On assignment a consumer takes a new epoch for each partition; each batch
transaction then moves the partition's next offset only while that epoch is
still current. A consumer that lost a partition (and missed its revocation,
e.g. after a long pause) therefore cannot write once the new owner took over:
its batch transaction fails and rolls back every effect it made.

The same one UPDATE per batch keeps the partition's throughput window for
`paystream status` (migration 009): measuring costs no extra statement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

NO_OFFSET = -1
# The throughput window's step: a window spans one to two steps of traffic up to
# the partition's last batch (docs/operations.md, "Status").
WINDOW_STEP_S = 60

# `advance` moves the window inside its one UPDATE. A point (offset, time)
# means "by then every record below the offset was processed". The previous
# batch's end holds from that batch until now (nothing advanced in between),
# so it may be dated as late as one step ago: a partition idle for an hour
# then counts this batch over one step, not over the hour. A row never
# advanced before (NO_OFFSET) starts at the batch's first offset.
_STEP = f"interval '{WINDOW_STEP_S} seconds'"
_PREVIOUS_OFFSET = f"CASE WHEN o.next_offset = {NO_OFFSET} THEN v.start_offset ELSE o.next_offset END"
_PREVIOUS_AT = (
    f"CASE WHEN o.next_offset = {NO_OFFSET} THEN now() - {_STEP}"
    f" ELSE greatest(coalesce(o.last_batch_at, o.updated_at), now() - {_STEP}) END"
)
# Time to move on: the next window's start is one step old. It becomes the
# window's start unless it is two steps old (a pause): then the previous batch's end does.
_ROTATE = f"(o.next_window_started_at IS NULL OR o.next_window_started_at <= now() - {_STEP})"
_NEXT_FRESH = f"o.next_window_started_at > now() - 2 * {_STEP}"
_ADVANCE_SQL = f"""
        UPDATE stage_offsets AS o
        SET next_offset = greatest(o.next_offset, v.end_offset),
            updated_at = now(),
            last_batch_at = now(),
            window_offset = CASE WHEN NOT {_ROTATE} THEN o.window_offset
                                 WHEN {_NEXT_FRESH} THEN o.next_window_offset ELSE {_PREVIOUS_OFFSET} END,
            window_started_at = CASE WHEN NOT {_ROTATE} THEN o.window_started_at
                                     WHEN {_NEXT_FRESH} THEN o.next_window_started_at ELSE {_PREVIOUS_AT} END,
            next_window_offset = CASE WHEN {_ROTATE} THEN {_PREVIOUS_OFFSET} ELSE o.next_window_offset END,
            next_window_started_at = CASE WHEN {_ROTATE} THEN {_PREVIOUS_AT} ELSE o.next_window_started_at END
        FROM unnest($3::int[], $4::bigint[], $5::bigint[], $6::bigint[])
             AS v(partition, start_offset, end_offset, epoch)
        WHERE o.group_id = $1 AND o.topic = $2 AND o.partition = v.partition
          AND o.epoch = v.epoch
        RETURNING o.partition
        """


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
    The same statement dates the batch and moves the throughput window
    (`paystream status`); a fenced partition's row, like its offset, is untouched.
    """
    partitions = sorted(spans)
    rows = await connection.fetch(
        _ADVANCE_SQL,
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
