"""Records a stage could not use, kept with the reason and where they came from."""

from __future__ import annotations

from typing import Literal

from schemas.payments import Event, UtcTime


class DeadLetter(Event, frozen=True, kw_only=True):
    """`field` and `rule` say what was wrong; `raw_text` keeps the input (truncated)."""

    schema: Literal["dead_letter"] = "dead_letter"
    v: Literal[1] = 1
    event_id: str
    stage: str
    origin_topic: str
    origin_partition: int
    origin_offset: int
    field: str
    rule: str
    detail: str
    raw_text: str
    raw_bytes: int
    received_at: UtcTime


def dead_letter_event_id(stage: str, topic: str, partition: int, offset: int) -> str:
    return f"{stage}:{topic}:{partition}:{offset}"
