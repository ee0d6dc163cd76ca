"""One status snapshot, built from the broker's and PostgreSQL's answers without any I/O.

Lag is the broker's view: end offset minus the group's committed offset (all
retained records when the group never committed), the records a stage still
has to commit. The last batch and the throughput come from the partition's
`stage_offsets` row, which every batch transaction updates
(`paystream.stage.fencing.advance`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from paystream.stage.fencing import WINDOW_STEP_S

# A partition whose last batch is older than this processed nothing in the last minute: its throughput is 0.
RECENT_S = WINDOW_STEP_S


@dataclass(frozen=True, slots=True)
class Member:
    """A consumer in a stage's group, as the group coordinator describes it."""

    member_id: str
    client_id: str
    host: str
    partitions: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class OffsetRow:
    """The columns of a partition's `stage_offsets` row that status reads."""

    partition: int
    next_offset: int
    last_batch_at: datetime | None
    window_offset: int | None
    window_started_at: datetime | None


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    partition: int
    member: str | None  # the client id of the member the partition is assigned to
    committed_offset: int | None  # None: the group never committed an offset for it
    end_offset: int
    lag: int
    database_next_offset: int | None  # None: no batch transaction ever claimed it
    last_batch_age_s: float | None  # None: never processed a batch
    records_per_s: float


@dataclass(frozen=True, slots=True)
class StageStatus:
    stage: str
    group_id: str
    topic: str
    group_state: str  # the coordinator's word: Stable, Empty, PreparingRebalance, Dead (never seen) ...
    members: tuple[Member, ...]
    partitions: tuple[PartitionStatus, ...]
    dead_letters_last_hour: int

    @property
    def live_consumer(self) -> bool:
        return bool(self.members)

    @property
    def lag_total(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def records_per_s(self) -> float:
        return sum(p.records_per_s for p in self.partitions)

    @property
    def last_batch_age_s(self) -> float | None:
        ages = [p.last_batch_age_s for p in self.partitions if p.last_batch_age_s is not None]
        return min(ages) if ages else None


@dataclass(frozen=True, slots=True)
class Snapshot:
    taken_at: datetime  # PostgreSQL's clock: ages are measured on the clock that dated the batches
    stages: tuple[StageStatus, ...]


def window_rate(row: OffsetRow | None, now: datetime) -> float:
    """Records per second over the partition's window (60-120 s up to its last batch); 0 when idle a minute.

    Offsets count records, plus the odd gap a transaction marker leaves: an approximation.
    """
    if row is None or row.last_batch_at is None or row.window_started_at is None or row.window_offset is None:
        return 0.0
    if (now - row.last_batch_at).total_seconds() > RECENT_S:
        return 0.0
    span_s = (row.last_batch_at - row.window_started_at).total_seconds()
    if span_s <= 0:
        return 0.0
    return max(row.next_offset - row.window_offset, 0) / span_s


def partition_lag(committed: int | None, beginning: int, end: int) -> int:
    """Records not yet committed: from the group's commit, or from the log start when it never committed."""
    start = beginning if committed is None else max(committed, beginning)
    return max(end - start, 0)


def stage_status(
    stage: str,
    group_id: str,
    topic: str,
    group_state: str,
    members: Sequence[Member],
    partitions: Sequence[int],
    committed: Mapping[int, int],
    beginnings: Mapping[int, int],
    ends: Mapping[int, int],
    rows: Mapping[int, OffsetRow],
    dead_letters_last_hour: int,
    now: datetime,
) -> StageStatus:
    """Join the broker's and the database's answers for one stage, partition by partition."""
    owner = {p: m.client_id for m in members for p in m.partitions}
    statuses = []
    for partition in sorted(partitions):
        row = rows.get(partition)
        last_batch_at = None if row is None else row.last_batch_at
        statuses.append(
            PartitionStatus(
                partition=partition,
                member=owner.get(partition),
                committed_offset=committed.get(partition),
                end_offset=ends[partition],
                lag=partition_lag(committed.get(partition), beginnings[partition], ends[partition]),
                database_next_offset=None if row is None or row.next_offset < 0 else row.next_offset,
                last_batch_age_s=None if last_batch_at is None else max((now - last_batch_at).total_seconds(), 0.0),
                records_per_s=window_rate(row, now),
            )
        )
    return StageStatus(
        stage=stage,
        group_id=group_id,
        topic=topic,
        group_state=group_state,
        members=tuple(sorted(members, key=lambda m: (m.client_id, m.member_id))),
        partitions=tuple(statuses),
        dead_letters_last_hour=dead_letters_last_hour,
    )
