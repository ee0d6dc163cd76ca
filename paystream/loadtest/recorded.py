"""`paystream loadtest --from FILE`: offer a recording's payments instead of generated ones.

The recorded gaps between records are kept, scaled so that the mean rate is
`--rate`: a recording's bursts and lulls stay bursts and lulls. A recording
without a time span (one record, or all in one millisecond) is sent evenly
at `--rate`. Ids are always rewritten, salted with the run id, so every run
is new traffic and `created_at` is the send time, as for generated load.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from paystream.errors import PaystreamError
from paystream.loadtest.measure import Timeline
from paystream.replay.pacing import SPEED_MAX, speed_for_mean_rate
from paystream.replay.recording import Recording
from topology.topics import PAYMENTS_REQUESTED

RECORDS_MAX = 5_000_000  # the synthetic load's bound on rate x duration


@dataclass(frozen=True, slots=True)
class RecordedLoad:
    path: Path
    records: int
    speed: float
    rate_per_s_max: float | None
    duration_s: float


def plan_recorded_load(path: Path, rate_per_s: float) -> RecordedLoad:
    """Check the whole recording (before any environment is prepared) and work out its pace."""
    recording = Recording(path)
    if recording.header.topic != PAYMENTS_REQUESTED:
        raise PaystreamError(f"{path} holds {recording.header.topic} records; a load test needs {PAYMENTS_REQUESTED}")
    summary = recording.verify()
    if not 0 < summary.records <= RECORDS_MAX:
        raise PaystreamError(f"{path} holds {summary.records} records; a load test needs 1 to {RECORDS_MAX:,}")
    speed = speed_for_mean_rate(summary.records, summary.span_ms, rate_per_s)
    if speed == SPEED_MAX:
        return RecordedLoad(path, summary.records, speed, rate_per_s, summary.records / rate_per_s)
    return RecordedLoad(path, summary.records, speed, None, summary.span_ms / 1000 / speed)


class PublishedCounter:
    """The player's progress, counted into the load test's per-second timeline."""

    def __init__(self, timeline: Timeline, started: float) -> None:
        self.timeline = timeline
        self.started = started
        self.published = 0

    def update(self, n: float | None = 1) -> bool | None:
        count = int(n or 0)
        self.published += count
        self.timeline.count(self.timeline.published, int(time.monotonic() - self.started), count)
        return None
