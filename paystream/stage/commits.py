"""Step 4 of the stage loop: Kafka offset commits, off the batch's path and at most every interval.

Kafka's committed offset says "every record before it has had its events
produced"; PostgreSQL's offset row says "its effects are stored". A partition
resumes at the smaller of the two (`membership.resume_position`), so a Kafka
commit that trails only makes a restart replay more batches, whose
transactions write nothing new and whose events go out again under the same
ids. That lets the commit leave the batch's path:

- a batch hands its offsets over once every acknowledgement of its events is
  in (never before: that is what the commit asserts);
- one commit is in flight at a time, in a task of its own, while the next
  batch does its database work; it carries the newest offsets handed over;
- a commit starts at most every `offset_commit_interval_ms` (0: after every
  batch, awaited, as the loop used to), which also spares the broker a write to
  `__consumer_offsets` per batch;
- before partitions are revoked, and when the loop stops, the offsets handed
  over are committed and awaited, so the next owner starts right after them.

Measured at 1,000 payments/s with four worker processes (docs/performance.md):
the commit took about 7 ms of each batch's roughly 31 ms.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

log = structlog.get_logger("paystream.stage")

# A commit lost to a rebalance: the partitions' new owner replays from the previous commit.
REBALANCED = (CommitFailedError, IllegalStateError)


class OffsetCommitter:
    """Offsets of batches whose events are acknowledged, committed to Kafka in the background."""

    def __init__(
        self,
        stage: str,
        consumer: Callable[[], AIOKafkaConsumer],
        interval_ms: int,
        on_rebalanced: Callable[[], None],
        on_committed: Callable[[], None],
    ) -> None:
        self.stage = stage
        # The loop replaces its consumer when it reconnects: always commit with the current one.
        self._consumer = consumer
        self.interval_s = interval_ms / 1000
        self._on_rebalanced = on_rebalanced
        self._on_committed = on_committed
        self.pending: dict[TopicPartition, int] = {}
        self.in_flight: asyncio.Task[None] | None = None
        self.last_started = float("-inf")

    def hand_over(self, offsets: dict[TopicPartition, int]) -> None:
        """A batch's next offsets, once its events are acknowledged (never before); the newest per partition wins."""
        for tp, offset in offsets.items():
            self.pending[tp] = max(offset, self.pending.get(tp, offset))

    def has_deferred(self) -> bool:
        """Offsets handed over whose commit has not started (waiting for the interval)."""
        return bool(self.pending)

    async def after_batch(self) -> None:
        """Commit now (interval 0) or start a background commit when the interval has passed."""
        if self.interval_s == 0:
            await self.flush()
            return
        self.maybe_start()

    def maybe_start(self) -> None:
        """Start a background commit of what was handed over, if none is in flight and the interval passed."""
        if self.in_flight is not None:
            if not self.in_flight.done():
                return
            failed, self.in_flight = self.in_flight.exception(), None
            if failed is not None:
                raise failed
        if not self.pending:
            return
        now = time.monotonic()
        if now - self.last_started < self.interval_s:
            return
        self.last_started = now
        offsets, self.pending = self.pending, {}
        self.in_flight = asyncio.create_task(self._commit(offsets, background=True))

    async def flush(self) -> None:
        """Wait for the commit in flight, then commit everything handed over since (revocation, stop)."""
        if self.in_flight is not None:
            await asyncio.shield(self.in_flight)
            self.in_flight = None
        if self.pending:
            offsets, self.pending = self.pending, {}
            self.last_started = time.monotonic()
            await self._commit(offsets, background=False)

    async def flush_at_stop(self) -> None:
        """`flush`, when the loop stops: a commit that fails here only means a longer replay."""
        try:
            await self.flush()
        except Exception as error:  # noqa: BLE001 - logged; the next owner replays from the older commit
            log.warning("offsets not committed at stop; the next owner replays", stage=self.stage, error=str(error))

    async def _commit(self, offsets: dict[TopicPartition, int], *, background: bool) -> None:
        try:
            await self._consumer().commit(offsets)
        except REBALANCED as error:
            # The group rebalanced under us: the partitions belong to another
            # member, which resumes from the previous commit and replays these
            # batches harmlessly. Not ignored: counted and logged.
            self._on_rebalanced()
            log.warning(
                "offset commit failed after a rebalance; the new owner replays the batches",
                stage=self.stage,
                error=str(error),
            )
            return
        except KafkaError as error:
            if not background:
                raise
            # A broker hiccup: keep the offsets (unless newer ones came) for the next attempt.
            self.hand_over(offsets)
            log.warning("offset commit failed; retried with the next one", stage=self.stage, error=str(error))
            return
        self._on_committed()
