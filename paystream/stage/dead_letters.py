"""Dead letters: stored in the batch transaction, then produced with the outputs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from paystream.stage.contract import Output, Refused
from schemas.codec import storable_text
from schemas.dead_letter import DeadLetter, dead_letter_event_id
from topology.topics import DEAD_LETTER

RAW_TEXT_CHARS_MAX = 2_000


def _event(stage: str, refused: Refused, now: datetime) -> DeadLetter:
    return DeadLetter(
        event_id=dead_letter_event_id(stage, refused.origin.topic, refused.origin.partition, refused.origin.offset),
        stage=stage,
        origin_topic=refused.origin.topic,
        origin_partition=refused.origin.partition,
        origin_offset=refused.origin.offset,
        field=refused.field,
        rule=refused.rule,
        detail=storable_text(refused.detail)[:500],
        # Escaped NUL and lone surrogates: the dead letter itself must be storable and decodable.
        raw_text=storable_text(refused.raw[:RAW_TEXT_CHARS_MAX].decode("utf-8", errors="replace")),
        raw_bytes=len(refused.raw),
        received_at=now,
    )


def dead_letter_outputs(stage: str, refused: Sequence[Refused], now: datetime) -> list[Output]:
    return [Output(DEAD_LETTER, stage, _event(stage, item, now)) for item in refused]


async def store_dead_letters(connection: Any, stage: str, refused: Sequence[Refused], now: datetime) -> None:
    """Keep every refused record with its reason; a replayed one is stored once."""
    if not refused:
        return
    await connection.execute(
        """
        INSERT INTO dead_letters (event_id, stage, origin_topic, origin_partition, origin_offset,
                                  field, rule, detail, raw, received_at)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::bigint[],
                             $6::text[], $7::text[], $8::text[], $9::bytea[], $10::timestamptz[])
        ON CONFLICT (event_id) DO NOTHING
        """,
        [dead_letter_event_id(stage, r.origin.topic, r.origin.partition, r.origin.offset) for r in refused],
        [stage] * len(refused),
        [r.origin.topic for r in refused],
        [r.origin.partition for r in refused],
        [r.origin.offset for r in refused],
        [storable_text(r.field) for r in refused],
        [r.rule for r in refused],
        [storable_text(r.detail) for r in refused],
        [r.raw for r in refused],
        [now] * len(refused),
    )
