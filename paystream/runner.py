"""Run one or more stage loops in this process until SIGTERM/SIGINT (or idle, in burst mode)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Sequence

import structlog

from paystream.db.pool import create_pool
from paystream.settings import Settings
from paystream.stage.loop import Activity, LoopStats, StageLoop
from workers import build_stage

log = structlog.get_logger("paystream.runner")


async def run_stages(
    settings: Settings,
    stage_names: Sequence[str],
    idle_exit_ms: int | None = None,
    stop: asyncio.Event | None = None,
) -> dict[str, LoopStats]:
    """Run the stages concurrently; SIGTERM finishes each batch in flight, commits, and returns."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Not the main thread (tests): the caller sets `stop` itself.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    pool = await create_pool(settings, size_max=settings.db_pool_size_max * len(stage_names))
    try:
        loops = {name: StageLoop(build_stage(name, settings), settings, pool) for name in stage_names}
        activity = Activity()
        results = await asyncio.gather(
            *(stage_loop.run(stop, idle_exit_ms, activity) for stage_loop in loops.values()),
            return_exceptions=True,
        )
    finally:
        await pool.close()
    stats: dict[str, LoopStats] = {}
    for name, result in zip(loops, results, strict=True):
        if isinstance(result, BaseException):
            stop.set()
            raise result
        stats[name] = result
    return stats
