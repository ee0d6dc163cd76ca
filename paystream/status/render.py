"""A status snapshot as text tables for people, or as JSON with stable keys for machines.

The JSON keys are a contract (scripts and alerts read them): add keys, never
rename or remove one. Ages are seconds, throughput records per second, offsets
and lag whole records; null where there is nothing to say (a partition never
committed or never processed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from paystream.status.model import PartitionStatus, Snapshot, StageStatus

NO_LIVE_CONSUMER = "no live consumer"
PARTITION_COLUMNS = ("partition", "member", "committed", "end", "lag", "last batch", "records/s")
# Columns whose cells are numbers: right-aligned.
_NUMERIC = frozenset({"partition", "committed", "end", "lag", "records/s"})


def snapshot_json(snapshot: Snapshot) -> dict[str, Any]:
    return {"taken_at": _iso(snapshot), "stages": [_stage_json(stage) for stage in snapshot.stages]}


def render_json(snapshot: Snapshot) -> str:
    return orjson.dumps(snapshot_json(snapshot), option=orjson.OPT_INDENT_2).decode()


def _iso(snapshot: Snapshot) -> str:
    return snapshot.taken_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _stage_json(stage: StageStatus) -> dict[str, Any]:
    return {
        "stage": stage.stage,
        "group_id": stage.group_id,
        "topic": stage.topic,
        "group_state": stage.group_state,
        "live_consumer": stage.live_consumer,
        "members": [
            {"member_id": m.member_id, "client_id": m.client_id, "host": m.host, "partitions": list(m.partitions)}
            for m in stage.members
        ],
        "partitions": [_partition_json(p) for p in stage.partitions],
        "lag_total": stage.lag_total,
        "last_batch_age_s": _rounded(stage.last_batch_age_s, 3),
        "records_per_s": _rounded(stage.records_per_s, 2),
        "dead_letters_last_hour": stage.dead_letters_last_hour,
    }


def _partition_json(p: PartitionStatus) -> dict[str, Any]:
    return {
        "partition": p.partition,
        "member": p.member,
        "committed_offset": p.committed_offset,
        "end_offset": p.end_offset,
        "lag": p.lag,
        "database_next_offset": p.database_next_offset,
        "last_batch_age_s": _rounded(p.last_batch_age_s, 3),
        "records_per_s": _rounded(p.records_per_s, 2),
    }


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def render_text(snapshot: Snapshot) -> str:
    """A header line, then one block per stage: its consumers, a table of partitions with a total, dead letters."""
    lines = [f"paystream status at {snapshot.taken_at:%Y-%m-%d %H:%M:%S}Z"]
    for stage in snapshot.stages:
        lines.append("")
        lines.extend(_stage_lines(stage))
    return "\n".join(lines)


def _stage_lines(stage: StageStatus) -> list[str]:
    lines = [f"{stage.stage}: {stage.topic} -> group {stage.group_id} ({stage.group_state})"]
    if not stage.live_consumer:
        lines.append(f"  {NO_LIVE_CONSUMER}: nothing is processing {stage.topic}")
    for member in stage.members:
        owned = ",".join(str(p) for p in member.partitions) or "none"
        lines.append(f"  member {member.client_id} on {member.host}: partitions {owned}")
    rows = [_partition_cells(p) for p in stage.partitions]
    rows.append(["total", "", "", "", str(stage.lag_total), _age(stage.last_batch_age_s), _rate(stage.records_per_s)])
    lines.extend("  " + line for line in aligned(PARTITION_COLUMNS, rows))
    lines.append(f"  dead letters in the last hour: {stage.dead_letters_last_hour}")
    return lines


def _partition_cells(p: PartitionStatus) -> list[str]:
    return [
        str(p.partition),
        p.member or "-",
        "-" if p.committed_offset is None else str(p.committed_offset),
        str(p.end_offset),
        str(p.lag),
        _age(p.last_batch_age_s),
        _rate(p.records_per_s),
    ]


def aligned(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The header and rows in columns as wide as their widest cell; numbers right-aligned."""
    widths = [max(len(column), *(len(row[i]) for row in rows)) for i, column in enumerate(columns)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(width) if column in _NUMERIC else cell.ljust(width)
            for cell, width, column in zip(cells, widths, columns, strict=True)
        ]
        return "  ".join(padded).rstrip()

    return [line(columns), *(line(row) for row in rows)]


def _age(seconds: float | None) -> str:
    """How long ago, in the unit a person reads at a glance."""
    if seconds is None:
        return "never"
    if seconds < 10:
        return f"{seconds:.1f} s ago"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7_200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172_800:
        return f"{seconds / 3_600:.0f} h ago"
    return f"{seconds / 86_400:.0f} d ago"


def _rate(records_per_s: float) -> str:
    return f"{records_per_s:,.1f}"
