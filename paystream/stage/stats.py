"""What a stage loop counts, and when a pipeline's loops last did work."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class Activity:
    """When any loop of a pipeline last did work: burst mode stops once all were idle together."""

    last: float = field(default_factory=time.monotonic)

    def touch(self) -> None:
        self.last = time.monotonic()


@dataclass(slots=True)
class LoopStats:
    batches: int = 0
    records: int = 0
    dead_letters: int = 0
    outputs: int = 0
    fenced: int = 0
    reclaims: int = 0
    isolations: int = 0
    poisoned: int = 0
    retries: int = 0
    commit_failures: int = 0
    rebalances: int = 0
    ticks: int = 0
    started_at: float = field(default_factory=time.monotonic)
    # Monotonic times for health and metrics (not counters): the last loop
    # iteration or retry attempt, and the last batch committed (None: none yet).
    progress_at: float = field(default_factory=time.monotonic)
    last_batch_at: float | None = None

    def last_batch_age_s(self, now: float) -> float:
        """Seconds since the last committed batch; before the first, since the loop was made."""
        return now - (self.started_at if self.last_batch_at is None else self.last_batch_at)


_TIMES = ("started_at", "progress_at", "last_batch_at")


def stats_fields(stats: LoopStats) -> dict[str, Any]:
    """The counters for the "stage stopped" log line."""
    fields = asdict(stats)
    for name in _TIMES:
        fields.pop(name)
    return fields
