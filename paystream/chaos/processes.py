"""Stage workers as separate OS processes that a test can kill, restart and scale."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from paystream.settings import Settings

GRACEFUL_STOP_S = 30.0


def settings_environment(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment that makes a child process load exactly these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYSTREAM_")}
    env.update(
        {
            "PAYSTREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "PAYSTREAM_DATABASE_URL": settings.database_url,
            "PAYSTREAM_NAMESPACE": settings.namespace,
            "PAYSTREAM_BATCH_RECORDS_MAX": str(settings.batch_records_max),
            "PAYSTREAM_BATCH_WAIT_MS": str(settings.batch_wait_ms),
            "PAYSTREAM_SETTLEMENT_CYCLE_S": str(settings.settlement_cycle_s),
            "PAYSTREAM_SETTLEMENT_GRACE_S": str(settings.settlement_grace_s),
            "PAYSTREAM_SETTLEMENT_CLOSE_INTERVAL_MS": str(settings.settlement_close_interval_ms),
            "PAYSTREAM_HOLD_EXPIRY_INTERVAL_MS": str(settings.hold_expiry_interval_ms),
            "PAYSTREAM_RETRY_DURATION_MS_MAX": str(settings.retry_duration_ms_max),
            "PAYSTREAM_KAFKA_SESSION_TIMEOUT_MS": str(settings.kafka_session_timeout_ms),
            "PAYSTREAM_LOG_FORMAT": "json",
        }
    )
    env.update(extra or {})
    return env


@dataclass
class WorkerProcess:
    stage: str
    process: asyncio.subprocess.Process
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class WorkerFleet:
    """Every worker process of a run, by stage, with their logs under `log_dir`."""

    settings: Settings
    log_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    # What each process runs, followed by the stage name: `paystream worker STAGE` by default.
    command: tuple[str, ...] = ("-m", "paystream.cli.main", "worker")
    workers: dict[str, list[WorkerProcess]] = field(default_factory=dict)
    started_count: int = 0

    async def start(self, stage: str, extra_env: dict[str, str] | None = None) -> WorkerProcess:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.started_count += 1
        log_path = self.log_dir / f"{stage}-{self.started_count:03d}.log"
        env = settings_environment(self.settings, {**self.extra_env, **(extra_env or {})})
        with log_path.open("wb") as log_file:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                *self.command,
                stage,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
            )
        worker = WorkerProcess(stage, process, log_path)
        self.workers.setdefault(stage, []).append(worker)
        return worker

    def running(self, stage: str) -> list[WorkerProcess]:
        return [w for w in self.workers.get(stage, []) if w.process.returncode is None]

    async def kill(self, worker: WorkerProcess) -> None:
        """SIGKILL: no finally blocks, no flush, no commit."""
        if worker.process.returncode is None:
            worker.process.send_signal(signal.SIGKILL)
        await worker.process.wait()

    async def stop(self, worker: WorkerProcess) -> int:
        """SIGTERM: the worker finishes its batch in flight, commits and exits."""
        if worker.process.returncode is None:
            worker.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(worker.process.wait(), GRACEFUL_STOP_S)
            except TimeoutError:
                worker.process.send_signal(signal.SIGKILL)
                await worker.process.wait()
        return worker.process.returncode or 0

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(w) for ws in self.workers.values() for w in ws))

    def count_in_logs(self, needle: str) -> int:
        """How many log lines of this run's workers contain `needle`."""
        total = 0
        for path in self.log_dir.glob("*.log"):
            with path.open(errors="replace") as log:
                total += sum(1 for line in log if needle in line)
        return total

    def exited_unexpectedly(self) -> list[WorkerProcess]:
        """Workers that died on their own (not by our signals): a bug or exhausted retries."""
        return [
            w
            for ws in self.workers.values()
            for w in ws
            if w.process.returncode not in (None, 0, -signal.SIGKILL, -signal.SIGTERM)
        ]
