"""Watching a benchmark run: completions seen downstream, publishing at a rate, waiting for the end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec

from paystream.chaos.processes import WorkerFleet
from paystream.errors import PaystreamError
from paystream.generator import PaymentGenerator
from paystream.loadtest.measure import LatencyRecorder
from paystream.loadtest.observe import first_outcomes, latency_us
from paystream.publisher import PaymentPublisher
from paystream.settings import Settings

POLL_S = 0.2


class BenchFailedError(PaystreamError):
    """A run did not complete: the figures would be wrong, so none are reported."""


@dataclass
class Observer:
    """Completion times (and latencies) of the payments whose first outcome appears downstream."""

    settings: Settings
    counted: Callable[[str], bool] = lambda _payment_id: True
    completed_at_s: list[float] = field(default_factory=list)
    latency: LatencyRecorder = field(default_factory=LatencyRecorder)
    completed: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        async for received_at, outcomes in first_outcomes(self.settings, stop):
            now_s = time.monotonic()
            self.completed += len(outcomes)
            for outcome in outcomes:
                if self.counted(outcome.payment_id):
                    self.completed_at_s.append(now_s)
                    self.latency.record(0, latency_us(outcome, received_at))


async def publish_at_rate(settings: Settings, generator: PaymentGenerator, total: int, rate_per_s: float) -> None:
    interval_s = 1.0 / rate_per_s
    started_s = time.monotonic()
    async with PaymentPublisher(settings, client_id="paystream-bench-load") as publisher:
        for index, generated in enumerate(generator.generate(total, datetime.now(UTC), timedelta(0))):
            ahead_s = started_s + index * interval_s - time.monotonic()
            if ahead_s > 0:
                await asyncio.sleep(ahead_s)
            # Stamped at send time: latency then measures the system, not the generator.
            await publisher.publish(msgspec.structs.replace(generated.payment, created_at=datetime.now(UTC)))


async def wait_complete(observer: Observer, expected: int, fleet: WorkerFleet, timeout_s: float, system: str) -> None:
    deadline = time.monotonic() + timeout_s
    while observer.completed < expected:
        crashed = fleet.exited_unexpectedly()
        if crashed:
            raise BenchFailedError(
                f"{system}: worker {crashed[0].stage} exited with {crashed[0].process.returncode};"
                f" its log: {crashed[0].log_path}"
            )
        if time.monotonic() > deadline:
            raise BenchFailedError(
                f"{system}: only {observer.completed:,} of {expected:,} payments completed within {timeout_s:g} s"
            )
        await asyncio.sleep(POLL_S)
