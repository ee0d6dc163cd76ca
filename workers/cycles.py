"""Settlement cycles in event time: fixed-length windows aligned to the Unix epoch."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class CycleClock:
    cycle: timedelta
    grace: timedelta

    def __post_init__(self) -> None:
        assert self.cycle >= timedelta(seconds=1), self.cycle
        assert self.grace >= timedelta(0), self.grace

    def cycle_start(self, event_time: datetime) -> datetime:
        """The start of the cycle holding `event_time` (cycles are [start, start + cycle))."""
        assert event_time.tzinfo is not None
        elapsed = event_time - EPOCH
        return EPOCH + self.cycle * (elapsed // self.cycle)

    def cutoff(self, cycle_start: datetime) -> datetime:
        """When the batch of this cycle closes: its end plus the grace for late events."""
        return cycle_start + self.cycle + self.grace

    def batch_id(self, merchant_id: str, currency: str, cycle_start: datetime) -> str:
        return f"{merchant_id}:{currency}:{cycle_start.astimezone(UTC):%Y%m%dT%H%M%SZ}"
