"""The pipeline under load: four `paystream worker` processes (as in production), or the stages in-process.

Latency is measured with the workers as separate processes by default: in one
process the load generator, the observer and the four stages share one event
loop and one core, and every stage's batch waits behind the others' Python work.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Literal

from paystream.chaos.processes import WorkerFleet
from paystream.errors import PaystreamError
from paystream.runner import run_stages
from paystream.settings import Settings
from workers import STAGE_NAMES

WorkerMode = Literal["processes", "inprocess"]
WORKER_MODES: tuple[WorkerMode, ...] = ("processes", "inprocess")


class WorkerDiedError(PaystreamError):
    """A stage stopped during the load test: the figures would be wrong."""


class LoadPipeline:
    """Starts the stages one way or the other; `check` raises when one died; `stop` ends them."""

    def __init__(self, settings: Settings, mode: WorkerMode, log_dir: Path) -> None:
        self.settings = settings
        self.mode = mode
        self.stop_event = asyncio.Event()
        self.task: asyncio.Task[object] | None = None
        self.fleet = WorkerFleet(settings, log_dir)

    async def start(self) -> None:
        if self.mode == "inprocess":
            self.task = asyncio.create_task(run_stages(self.settings, STAGE_NAMES, stop=self.stop_event))
            return
        for stage in STAGE_NAMES:
            await self.fleet.start(stage)

    def check(self) -> None:
        if self.task is not None and self.task.done():
            self.task.result()  # surfaces a stage's error
            raise WorkerDiedError("the in-process stages stopped during the load test")
        crashed = self.fleet.exited_unexpectedly()
        if crashed:
            worker = crashed[0]
            raise WorkerDiedError(
                f"worker {worker.stage} exited with {worker.process.returncode}; its log: {worker.log_path}"
            )

    async def stop(self) -> None:
        self.stop_event.set()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)
        await self.fleet.stop_all()
