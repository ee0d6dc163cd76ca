"""Send recorded records to a topic at the recorded pace (scaled), under an optional cap, ids optionally rewritten.

Records due at the same moment go as one group: header-less ones through
`send_in_batches` (one batch per partition), the rest one by one, in order,
so each partition receives them in the order played. Keys are kept, so the
partitioner puts a payer's payments on one partition in their recorded
order. Timestamps are the send time: this is new traffic, and a recorded
timestamp older than the topic's retention would be deleted at once.
The idempotent producer waits for acks=all; `play` returns only after every
record was acknowledged (or the produce timeout passed).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from paystream.errors import ServiceUnavailableError
from paystream.kafka import make_producer, send_in_batches
from paystream.replay.pacing import RateCap, Schedule
from paystream.replay.recording import RecordedRecord
from paystream.replay.rewrite import IdRewriter
from paystream.replay.source import Progress
from paystream.settings import Settings

GROUP_RECORDS_MAX = 2_000
# A longer wait is taken in steps, so the loop stays responsive to cancellation.
SLEEP_S_MAX = 1.0
IN_FLIGHT_BATCHES_MAX = 1_000
# send_in_batches fills 256 KiB batches; a larger record goes on its own.
BATCHED_RECORD_BYTES_MAX = 128 * 1024


@dataclass(frozen=True, slots=True)
class Pace:
    """`speed` divides the recorded gaps (0 = as fast as possible); `rate_per_s_max` caps records per second."""

    speed: float = 1.0
    rate_per_s_max: float | None = None


@dataclass
class PlayReport:
    topic: str
    sent: int = 0
    rewritten: int = 0
    untouched: int = 0
    # Records with neither key nor value: Kafka clients cannot produce them.
    skipped: int = 0
    wall_s: float = 0.0

    @property
    def rate_per_s(self) -> float:
        return self.sent / self.wall_s if self.wall_s > 0 else 0.0


async def play(
    settings: Settings,
    topic: str,
    records: Iterable[RecordedRecord] | AsyncIterable[RecordedRecord],
    pace: Pace,
    rewriter: IdRewriter | None = None,
    progress: Progress | None = None,
    client_id: str = "paystream-replay",
) -> PlayReport:
    """Send `records` to `topic` (a namespaced name) and wait for every ack."""
    producer = make_producer(settings, client_id)
    try:
        await producer.start()
    except KafkaError as error:
        await producer.stop()
        raise ServiceUnavailableError(f"cannot reach Kafka at {settings.kafka_bootstrap}: {error}") from error
    try:
        player = _Player(producer, topic, rewriter, progress, settings.produce_timeout_ms / 1000)
        async with contextlib.aclosing(_as_async(records)) as stream:
            return await player.run(stream, pace)
    finally:
        await producer.stop()


class _Player:
    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        rewriter: IdRewriter | None,
        progress: Progress | None,
        ack_timeout_s: float,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.rewriter = rewriter
        self.progress = progress
        self.ack_timeout_s = ack_timeout_s
        self.report = PlayReport(topic)
        self.pending: list[asyncio.Future[Any]] = []

    async def run(self, records: AsyncIterator[RecordedRecord], pace: Pace) -> PlayReport:
        started = time.monotonic()
        schedule = Schedule(pace.speed)
        cap = RateCap(pace.rate_per_s_max, 0.0) if pace.rate_per_s_max else None
        group: list[RecordedRecord] = []
        async for record in records:
            due_s = schedule.due_s(record.timestamp_ms)
            while True:
                now_s = time.monotonic() - started
                wait_s = due_s - now_s
                if cap is not None:
                    wait_s = max(wait_s, cap.wait_s(len(group) + 1, now_s))
                if wait_s <= 0 and len(group) < GROUP_RECORDS_MAX:
                    break
                if group:
                    # This record cannot join the group: send the group now, then look again.
                    await self._send(group, cap, now_s)
                    group = []
                    continue
                await asyncio.sleep(min(wait_s, SLEEP_S_MAX))
            group.append(record)
        if group:
            await self._send(group, cap, time.monotonic() - started)
        await self._wait_acks()
        self.report.wall_s = time.monotonic() - started
        if self.rewriter is not None:
            self.report.rewritten = self.rewriter.rewritten
            self.report.untouched = self.rewriter.untouched
        return self.report

    async def _send(self, group: list[RecordedRecord], cap: RateCap | None, now_s: float) -> None:
        if cap is not None:
            cap.take(len(group), now_s)
        now = datetime.now(UTC)
        batched: list[tuple[str, bytes, bytes]] = []
        skipped = 0
        for record in group:
            value = record.value if self.rewriter is None else self.rewriter.rewrite(record.value, now)
            key = record.key
            if (
                key is not None
                and value is not None
                and not record.headers
                and len(key) + len(value) <= BATCHED_RECORD_BYTES_MAX
            ):
                batched.append((self.topic, key, value))
                continue
            # Keep the played order: what was batched so far goes before this record.
            await self._send_batched(batched)
            batched = []
            if key is None and value is None:
                skipped += 1
                continue
            self.pending.append(
                await self.producer.send(self.topic, value=value, key=key, headers=list(record.headers))
            )
        await self._send_batched(batched)
        self.report.sent += len(group) - skipped
        self.report.skipped += skipped
        if self.progress is not None:
            self.progress.update(len(group))
        if len(self.pending) > IN_FLIGHT_BATCHES_MAX:
            await self._wait_acks()

    async def _send_batched(self, batched: list[tuple[str, bytes, bytes]]) -> None:
        if batched:
            self.pending.extend(await send_in_batches(self.producer, batched))

    async def _wait_acks(self) -> None:
        pending, self.pending = self.pending, []
        if not pending:
            return
        try:
            await asyncio.wait_for(asyncio.gather(*pending), self.ack_timeout_s)
        except TimeoutError:
            raise ServiceUnavailableError(
                f"{self.topic}: no acknowledgement within {self.ack_timeout_s:g} s; some records may not have been sent"
            ) from None
        except KafkaError as error:
            raise ServiceUnavailableError(
                f"{self.topic}: a send failed ({error}); some records may not be there"
            ) from error


async def _as_async(
    records: Iterable[RecordedRecord] | AsyncIterable[RecordedRecord],
) -> AsyncGenerator[RecordedRecord, None]:
    if isinstance(records, AsyncIterable):
        async for record in records:
            yield record
    else:
        for record in records:
            yield record
