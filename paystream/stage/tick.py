"""A stage's timer: work not driven by input (settlement closes batches, funds expires holds).

It takes the batch lock, so a tick never runs between a batch's steps and a
rebalance waits for it as for a batch. Its steps mirror the batch's: commit
in PostgreSQL (inside `stage.tick`), produce and await the acknowledgements,
then confirm (`on_delivered` marks the events published).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from paystream.stage.delivery import produce

if TYPE_CHECKING:
    from paystream.stage.loop import StageLoop


def tick_interval_s(loop: StageLoop[Any]) -> float:
    # A stage names its own timer's interval (funds: hold expiry); settlement's is the default.
    interval_ms: int = getattr(loop.stage, "tick_interval_ms", loop.settings.settlement_close_interval_ms)
    return interval_ms / 1000


async def maybe_tick(loop: StageLoop[Any]) -> bool:
    """Run the stage's timer if its interval passed (or its last run left more due); True when it did some work.

    A timer with more due (settlement's outbox, a chunk at a time) runs once
    between two batches: its transactions stay small and the stage's input is
    never held up behind a long one.
    """
    if time.monotonic() - loop.last_tick < tick_interval_s(loop):
        return False
    loop.last_tick = time.monotonic()
    async with loop.batch_lock:
        tick = await loop.retry("tick", lambda: loop.stage.tick(loop.pool, datetime.now(UTC)))
        if tick is None:
            return False
        loop.crash.tick_started()
        loop.crash.at("after_tick_commit")
        await loop.retry("produce tick", lambda: produce(loop.producer, loop.settings, tick.outputs))
        loop.crash.at("after_tick_produce")
        await loop.retry("confirm tick", tick.on_delivered)
        loop.stats.ticks += 1
        loop.stats.outputs += len(tick.outputs)
        if tick.more:
            loop.last_tick = 0.0
        return True
