"""A small helper for downstream consumers: follow a result topic, each event once.

Deliveries are at least once (a crash re-sends a batch's events with the same
ids), so a consumer must deduplicate. `EventDeduplicator` remembers the ids it
has seen within a bounded window; `follow` yields decoded, deduplicated events.
A consumer that applies events to its own database should instead store the
event id (or, for settlements, the batch id) with the effect, in one transaction.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Generic, TypeVar

import msgspec
from aiokafka import AIOKafkaConsumer

from paystream.settings import Settings
from schemas.accounts import AccountOutcome
from schemas.codec import Decoder, Invalid
from schemas.payments import PaymentOutcome
from schemas.refunds import PaymentRefunded
from schemas.retired import PaymentOutcomeV1, SettlementBatchClosedV1
from schemas.settlement import SettlementBatchClosed
from topology.topics import ACCOUNTS_OUTCOMES, PAYMENTS_OUTCOMES, SETTLEMENTS_CLOSED

E = TypeVar("E", bound=msgspec.Struct)

SEEN_IDS_MAX = 1_000_000
# Each kind's topic and the contracts read from it, newest first: retained
# events of an older version (schemas/retired.py) are read too.
RESULT_TOPICS: dict[str, tuple[str, tuple[type[msgspec.Struct], ...]]] = {
    "outcomes": (PAYMENTS_OUTCOMES, (PaymentOutcome, PaymentRefunded, PaymentOutcomeV1)),
    "accounts": (ACCOUNTS_OUTCOMES, (AccountOutcome,)),
    "settlements": (SETTLEMENTS_CLOSED, (SettlementBatchClosed, SettlementBatchClosedV1)),
}


class EventDeduplicator:
    """Remembers the last `capacity` event ids; `first_time(id)` is True once per id within that window."""

    def __init__(self, capacity: int = SEEN_IDS_MAX) -> None:
        assert capacity > 0
        self.capacity = capacity
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.duplicates = 0

    def first_time(self, event_id: str) -> bool:
        if event_id in self._seen:
            self._seen.move_to_end(event_id)
            self.duplicates += 1
            return False
        self._seen[event_id] = None
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return True


@dataclass(frozen=True, slots=True)
class Delivered(Generic[E]):
    event: E
    partition: int
    offset: int


async def follow(
    settings: Settings,
    kind: str,
    group_id: str | None = None,
    from_beginning: bool = False,
    dedup: EventDeduplicator | None = None,
    idle_exit_ms: int | None = None,
) -> AsyncIterator[Delivered[msgspec.Struct]]:
    """Decoded events of `outcomes` or `settlements`, each event id once.

    With `group_id` the consumer commits after each yielded batch (resumes
    where it stopped); without, it reads as an anonymous observer.
    """
    topic, event_types = RESULT_TOPICS[kind]
    decoder: Decoder[msgspec.Struct] = Decoder(event_types)
    dedup = dedup or EventDeduplicator()
    consumer = AIOKafkaConsumer(
        settings.topic(topic),
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        isolation_level="read_committed",
    )
    await consumer.start()
    idle_ms = 0
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            if not batch:
                idle_ms += 500
                if idle_exit_ms is not None and idle_ms >= idle_exit_ms:
                    return
                continue
            idle_ms = 0
            for tp, records in batch.items():
                for record in records:
                    decoded = decoder.decode(record.value)
                    if isinstance(decoded, Invalid):
                        continue  # not ours to judge: the producing stage validated it
                    if dedup.first_time(getattr(decoded, "event_id")):  # noqa: B009 - every contract has it
                        yield Delivered(decoded, tp.partition, record.offset)
            if group_id is not None:
                await consumer.commit()
    finally:
        await consumer.stop()
