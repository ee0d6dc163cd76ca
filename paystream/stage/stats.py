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


def stats_fields(stats: LoopStats) -> dict[str, Any]:
    """The counters for the "stage stopped" log line."""
    fields = asdict(stats)
    fields.pop("started_at")
    return fields
