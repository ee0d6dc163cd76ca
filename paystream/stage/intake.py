"""Step 1 of the stage loop: which fetched records are this consumer's to apply, and decoding them."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any

from aiokafka import TopicPartition

from paystream.stage.contract import Accepted, E, Origin, Refused
from schemas.codec import Decoder, Invalid


def owned_records(
    batch: Mapping[TopicPartition, list[Any]],
    assignment: Collection[TopicPartition],
    positions: Mapping[int, int],
    fenced: Collection[int],
) -> dict[TopicPartition, list[Any]]:
    """Keep only records at or after where this consumer's claim says to resume.

    Offsets may skip (transaction markers). Records of partitions revoked
    since getmany returned belong to the new owner; records fetched before a
    claim's seek were already applied; a fenced partition waits for its
    re-claim. Everything dropped here is fetched again by whoever owns it.
    """
    owned = {}
    for tp, tp_records in batch.items():
        position = positions.get(tp.partition)
        if tp in assignment and position is not None and tp.partition not in fenced:
            fresh = [r for r in tp_records if r.offset >= position]
            if fresh:
                owned[tp] = fresh
    return owned


def record_time(record: Any) -> datetime | None:
    """The record's Kafka timestamp (broker append time on payments.requested)."""
    timestamp_ms = getattr(record, "timestamp", None)
    if not isinstance(timestamp_ms, int) or timestamp_ms < 0:
        return None
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC)


def decode_records(
    decoder: Decoder[E], owned: Mapping[TopicPartition, list[Any]]
) -> tuple[list[Accepted[E]], list[Refused]]:
    """Decode every record; the invalid ones become refusals with the field and rule."""
    accepted: list[Accepted[E]] = []
    refused: list[Refused] = []
    for tp, tp_records in owned.items():
        for record in tp_records:
            origin = Origin(tp.topic, tp.partition, record.offset)
            raw = record.value or b""
            decoded = decoder.decode(record.value, record_time(record))
            if isinstance(decoded, Invalid):
                refused.append(Refused(origin, decoded.field, decoded.rule, decoded.detail, raw))
            else:
                accepted.append(Accepted(origin, decoded, raw))
    return accepted, refused
