"""Read one topic's records in a time window, up to the end offsets taken at the start, in timestamp order.

The partitions are merged by timestamp (a k-way merge, each partition in
offset order), not sorted as a whole: memory stays at a few fetches however
long the range, and one key's records keep their order even when producer
clocks disagree, which a payer's payments need. Outside any consumer group:
reading commits nothing and disturbs no stage.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from paystream.errors import PaystreamError, ServiceUnavailableError
from paystream.kafka import CLIENT_REQUEST_TIMEOUT_MS
from paystream.replay.recording import RecordedRecord
from paystream.settings import Settings
from paystream.topic_scan import EMPTY_POLLS_MAX, POLL_TIMEOUT_MS, topic_partitions


class Progress(Protocol):
    """What a tqdm bar offers; the load test passes its own counter."""

    def update(self, n: float | None = 1) -> bool | None: ...


@dataclass(frozen=True, slots=True)
class Window:
    """Record timestamps kept: since_ms <= t < until_ms; None leaves that side open."""

    since_ms: int | None = None
    until_ms: int | None = None

    def __post_init__(self) -> None:
        if self.since_ms is not None and self.until_ms is not None:
            assert self.since_ms < self.until_ms, self

    def contains(self, timestamp_ms: int) -> bool:
        if self.since_ms is not None and timestamp_ms < self.since_ms:
            return False
        return self.until_ms is None or timestamp_ms < self.until_ms


class TopicSource:
    """`async with TopicSource(...) as source: async for record in source.records(): ...`"""

    def __init__(self, settings: Settings, topic: str, window: Window, client_id: str) -> None:
        self.topic = topic
        self.window = window
        self.bootstrap = settings.kafka_bootstrap
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            request_timeout_ms=CLIENT_REQUEST_TIMEOUT_MS,
        )
        self.ends: dict[TopicPartition, int] = {}
        # Records between the start and end offsets: what will be read, kept or not.
        self.records_to_read = 0

    async def __aenter__(self) -> TopicSource:
        try:
            await self.consumer.start()
            await self._position()
        except KafkaError as error:
            await self.consumer.stop()
            raise ServiceUnavailableError(
                f"cannot read {self.topic} from Kafka at {self.bootstrap}: {error}"
            ) from error
        except BaseException:
            await self.consumer.stop()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.consumer.stop()

    async def _position(self) -> None:
        """Fix the end offsets first, then seek each partition to the first record that can be in the window."""
        tps = await topic_partitions(self.consumer, self.topic)
        if not tps:
            raise PaystreamError(f"topic {self.topic} does not exist on {self.bootstrap}")
        self.consumer.assign(tps)
        self.ends = await self.consumer.end_offsets(tps)
        starts = await self.consumer.beginning_offsets(tps)
        if self.window.since_ms is not None:
            # The earliest offset whose timestamp is >= since: nothing before it can be in the window.
            found = await self.consumer.offsets_for_times({tp: self.window.since_ms for tp in tps})
            starts = {tp: self.ends[tp] if found[tp] is None else found[tp].offset for tp in tps}
        for tp in tps:
            self.consumer.seek(tp, starts[tp])
        self.records_to_read = sum(max(0, self.ends[tp] - starts[tp]) for tp in tps)

    async def records(self, progress: Progress | None = None) -> AsyncIterator[RecordedRecord]:
        """The window's records, merged by (timestamp, partition, offset); `progress` counts records read."""
        buffers: dict[TopicPartition, deque[Any]] = {tp: deque() for tp in self.ends}
        heads: list[tuple[int, int, int, Any]] = []
        for tp in self.ends:
            await self._push_next(tp, buffers[tp], heads, progress)
        while heads:
            _, _, _, record = heapq.heappop(heads)
            tp = TopicPartition(self.topic, record.partition)
            await self._push_next(tp, buffers[tp], heads, progress)
            if self.window.contains(record.timestamp):
                yield RecordedRecord(
                    timestamp_ms=record.timestamp,
                    partition=record.partition,
                    offset=record.offset,
                    key=record.key,
                    value=record.value,
                    headers=tuple(record.headers or ()),
                )

    async def _push_next(
        self, tp: TopicPartition, buffer: deque[Any], heads: list[tuple[int, int, int, Any]], progress: Progress | None
    ) -> None:
        """Put the partition's next record below its end offset on the heap, fetching when its buffer is empty."""
        empty_polls = 0
        while not buffer:
            if await self.consumer.position(tp) >= self.ends[tp]:
                return
            fetched = (await self.consumer.getmany(tp, timeout_ms=POLL_TIMEOUT_MS)).get(tp, [])
            below_end = [r for r in fetched if r.offset < self.ends[tp]]
            if progress is not None and below_end:
                progress.update(len(below_end))
            buffer.extend(below_end)
            if fetched:
                empty_polls = 0
                continue
            empty_polls += 1
            if empty_polls > EMPTY_POLLS_MAX:
                raise PaystreamError(f"{tp.topic} partition {tp.partition} stopped short of end offset {self.ends[tp]}")
        record = buffer.popleft()
        heapq.heappush(heads, (record.timestamp, record.partition, record.offset, record))
