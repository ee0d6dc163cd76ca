"""Between benchmark runs: let the machine go quiet, so a run does not inherit the last one's work.

A run that follows the pass-through ceiling's 400,000 records used to start
while the broker still wrote those segments back and deleted their topics:
its first produce acknowledgements waited 100-470 ms and that became its p99.
Before each run the page cache's dirty pages are written (`os.sync`) and the
run waits until the CPUs were mostly idle for a whole sample, up to a bound.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path

# Idle share of all CPUs over one sample that counts as quiet. Two cores with a
# broker and PostgreSQL at rest idle at 95% or more here; the bound keeps a
# machine that never gets that quiet from stalling the benchmark.
QUIET_IDLE_SHARE = 0.85
SAMPLE_S = 1.0
SETTLE_S_MAX = 30.0


@dataclass(frozen=True, slots=True)
class Settled:
    waited_s: float
    idle_share: float
    quiet: bool


def cpu_times(stat: str) -> tuple[int, int]:
    """(idle, total) jiffies from the first line of /proc/stat; idle includes iowait."""
    fields = [int(value) for value in stat.splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return idle, sum(fields)


def idle_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else 1.0


def _read_stat() -> tuple[int, int] | None:
    try:
        return cpu_times(Path("/proc/stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


async def settle(bound_s: float = SETTLE_S_MAX) -> Settled:
    """Write dirty pages, then wait for one quiet CPU sample (at most `bound_s`)."""
    started = time.monotonic()
    await asyncio.to_thread(os.sync)
    share = 1.0
    while True:
        before = _read_stat()
        await asyncio.sleep(SAMPLE_S)
        after = _read_stat()
        if before is None or after is None:  # not Linux: nothing to read, nothing to wait for
            return Settled(time.monotonic() - started, 1.0, True)
        share = idle_share(before, after)
        waited = time.monotonic() - started
        if share >= QUIET_IDLE_SHARE:
            return Settled(waited, share, True)
        if waited >= bound_s:
            return Settled(waited, share, False)
