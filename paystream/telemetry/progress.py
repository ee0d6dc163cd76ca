"""A progress line per stage every `PAYSTREAM_PROGRESS_LOG_INTERVAL_S`: is it moving, is it keeping up.

Info level, one line per stage: records per second since the previous line,
the total lag over its claimed partitions (None until a fetch told the
high-water marks), and the age of its last committed batch. The "stage
stopped" line carries the totals.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from paystream.telemetry.lag import stage_lags

log = structlog.get_logger("paystream.stage")


@dataclass(frozen=True, slots=True)
class Mark:
    """A stage's record count at a monotonic time."""

    at: float
    records: int


def progress_fields(before: Mark, now: Mark, lag_records: int | None, last_batch_age_s: float) -> dict[str, Any]:
    """The progress line's fields: a rate over the interval, the lag and the batch age now."""
    elapsed_s = now.at - before.at
    rate = (now.records - before.records) / elapsed_s if elapsed_s > 0 else 0.0
    return {
        "records_per_s": round(rate, 1),
        "lag_records": lag_records,
        "last_batch_age_s": round(last_batch_age_s, 1),
    }


def total_lag(lags: Mapping[int, int]) -> int | None:
    return sum(lags.values()) if lags else None


async def log_progress(loops: Mapping[str, Any], interval_s: float) -> None:
    """Log each stage's progress every `interval_s` until cancelled."""
    marks = {name: Mark(time.monotonic(), loop.stats.records) for name, loop in loops.items()}
    while True:
        await asyncio.sleep(interval_s)
        for name, loop in loops.items():
            mark = Mark(time.monotonic(), loop.stats.records)
            fields = progress_fields(
                marks[name], mark, total_lag(stage_lags(loop)), loop.stats.last_batch_age_s(mark.at)
            )
            log.info("stage progress", stage=name, **fields)
            marks[name] = mark
