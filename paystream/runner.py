"""Run one or more stage loops in this process until SIGTERM/SIGINT (or idle, in burst mode).

When any stage dies, the others are stopped (each finishes its batch in
flight) and the error is raised: `paystream run` exits non-zero instead of
running on with a dead stage whose partitions nobody processes. After a stop,
the stages get `shutdown_grace_ms` to finish; past that they are cancelled
(nothing uncommitted is lost: it is replayed) and the run fails.

Beside the stages, in the same event loop: the metrics, health and readiness
server when `metrics_port` is set (one port for every stage of the process,
labelled by stage), and the periodic progress lines (`paystream.telemetry`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Sequence
from typing import Any

import structlog

from paystream.db.pool import create_pool
from paystream.errors import PaystreamError
from paystream.settings import Settings
from paystream.stage.loop import Activity, LoopStats, StageLoop
from paystream.telemetry.progress import log_progress
from paystream.telemetry.server import Telemetry
from workers import build_stage

log = structlog.get_logger("paystream.runner")


class ShutdownTimeoutError(PaystreamError):
    """A stage did not finish its batch in flight within shutdown_grace_ms after a stop."""


async def run_stages(
    settings: Settings,
    stage_names: Sequence[str],
    idle_exit_ms: int | None = None,
    stop: asyncio.Event | None = None,
) -> dict[str, LoopStats]:
    """Run the stages concurrently; SIGTERM finishes each batch in flight, commits, and returns."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Not the main thread (tests): the caller sets `stop` itself.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
            handled.append(signum)
    try:
        return await _run(settings, stage_names, idle_exit_ms, stop)
    finally:
        # The caller (demo, load test) gets Ctrl-C back once the stages are done.
        for signum in handled:
            loop.remove_signal_handler(signum)


async def _run(
    settings: Settings, stage_names: Sequence[str], idle_exit_ms: int | None, stop: asyncio.Event
) -> dict[str, LoopStats]:
    pool = await create_pool(settings, size_max=settings.db_pool_size_max * len(stage_names))
    telemetry: Telemetry | None = None
    progress: asyncio.Task[None] | None = None
    try:
        loops: dict[str, StageLoop[Any]] = {}
        if settings.metrics_port:
            # The port first: a port taken stops the run before any Kafka client exists.
            telemetry = Telemetry(settings, loops, pool, count_settlement="settlement" in stage_names)
            await telemetry.start()
        loops.update({name: StageLoop(build_stage(name, settings), settings, pool) for name in stage_names})
        if settings.progress_log_interval_s:
            progress = asyncio.create_task(log_progress(loops, settings.progress_log_interval_s), name="progress")
        activity = Activity()
        tasks = {
            name: asyncio.create_task(stage_loop.run(stop, idle_exit_ms, activity), name=f"stage-{name}")
            for name, stage_loop in loops.items()
        }
        await _wait_for_stages(tasks, stop, settings.shutdown_grace_ms / 1000)
    finally:
        if progress is not None:
            progress.cancel()
            await asyncio.gather(progress, return_exceptions=True)
        # Before the pool closes: a readiness check or a settlement count uses it.
        if telemetry is not None:
            await telemetry.stop()
        await pool.close()
    return {name: task.result() for name, task in tasks.items()}


async def _wait_for_stages(tasks: dict[str, asyncio.Task[LoopStats]], stop: asyncio.Event, grace_s: float) -> None:
    """Until every stage returned; the first to die stops the others, and its error is raised."""
    stopping = asyncio.create_task(stop.wait())
    pending: set[asyncio.Future[Any]] = {*tasks.values(), stopping}
    try:
        while not all(t.done() for t in tasks.values()):
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            failed = [t for t in tasks.values() if t.done() and not t.cancelled() and t.exception() is not None]
            if failed or stopping in done:
                if failed:
                    name = next(n for n, t in tasks.items() if t is failed[0])
                    log.error("stage died; stopping the others", stage=name, error=repr(failed[0].exception()))
                stop.set()
                break
        remaining = [t for t in tasks.values() if not t.done()]
        if remaining:
            _, late = await asyncio.wait(remaining, timeout=grace_s)
            if late:
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
                names = sorted(n for n, t in tasks.items() if t in late)
                raise ShutdownTimeoutError(
                    f"stage(s) {', '.join(names)} did not stop within {int(grace_s * 1000)} ms"
                    " (PAYSTREAM_SHUTDOWN_GRACE_MS); their uncommitted batches are replayed on restart"
                )
    except asyncio.CancelledError:
        # The caller gave up on the run (a timeout around it): its stages must not run on without it,
        # with the pool closed under them. Nothing uncommitted is lost: it is replayed.
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        raise
    finally:
        stopping.cancel()
    for task in tasks.values():
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
