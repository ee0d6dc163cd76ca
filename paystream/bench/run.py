"""One benchmark run: the systems measured alike, interleaved, on this machine.

For each system (paystream, the naive baseline, the pass-through ceiling,
the database ceiling) and each repetition:
- throughput: a backlog of generated payments is published first, then the
  system's four worker processes start; the sustained rate is read from the
  times their first outcomes appear downstream (see `measure`);
- latency (paystream and the ceiling): workers start, a warm-up batch goes
  through, then payments are offered at a fixed rate, each stamped
  `created_at` when sent; latency is until its first outcome is read.
- the database ceiling: the stages' own database work chained in-process
  without Kafka (`paystream.bench.dbceiling`), throughput only.
Every run has its own topics and database, deleted afterwards. Systems are
interleaved within each repetition so that machine noise spreads over all;
each repetition runs the latency runs first and rotates the order of the
systems, and every run starts on a settled machine (`paystream.bench.settle`),
so no run inherits the previous one's disk and broker work. Each run records
which run preceded it, so the report can show that order no longer matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from paystream.bench.dbceiling_procs import run_ceiling_processes
from paystream.bench.measure import sustained_rate_per_s
from paystream.bench.observe import BenchFailedError, Observer, publish_at_rate, wait_complete
from paystream.bench.scrape import Scraper, free_port
from paystream.bench.settle import settle
from paystream.chaos.processes import WorkerFleet
from paystream.demo_data import build_world
from paystream.generator import PaymentGenerator
from paystream.loadtest.measure import summary_ms
from paystream.prepare import delete_topics, drop_database, isolated_settings, prepare_environment
from paystream.publisher import PaymentPublisher
from paystream.settings import Settings
from workers import STAGE_NAMES

WARMUP_PAYMENTS = 200
# paystream with every worker's metrics endpoint on and scraped (`paystream.bench.scrape`).
METRICS_SYSTEM = "paystream+metrics"
THROUGHPUT_SYSTEMS = ("paystream", METRICS_SYSTEM, "naive", "passthrough", "dbceiling")
LATENCY_SYSTEMS = ("paystream", "passthrough")


@dataclass(frozen=True)
class BenchOptions:
    # Backlogs sized so that each system drains for roughly ten seconds here:
    # a shorter drain measures start-up more than throughput.
    payments: int = 40_000
    naive_payments: int = 1_500
    ceiling_payments: int = 400_000
    repeat: int = 3
    rate_per_s: float = 500.0
    latency_duration_s: float = 20.0
    run_timeout_s: float = 300.0
    work_dir: Path = Path("reports/bench")
    seed: int = 7
    # The systems to measure (default all); a focused run measures fewer.
    systems: tuple[str, ...] = ()
    # Worker processes per stage for paystream (the other systems run one).
    stage_processes: int = 1
    # How long to wait for a quiet machine before each run (0: not at all, as in tests).
    settle_s_max: float = 30.0


@dataclass
class ThroughputRun:
    system: str
    payments: int
    rate_per_s: float
    drain_s: float
    preceded_by: str = ""
    settle_s: float = 0.0


@dataclass
class LatencyRun:
    system: str
    offered_per_s: float
    payments: int
    achieved_per_s: float
    latency_ms: dict[str, float]
    preceded_by: str = ""
    settle_s: float = 0.0


@dataclass
class BenchResult:
    options: BenchOptions
    throughput: list[ThroughputRun] = field(default_factory=list)
    latency: list[LatencyRun] = field(default_factory=list)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def rotated(systems: tuple[str, ...], repetition: int) -> list[str]:
    """The systems starting at a different one each repetition."""
    shift = (repetition - 1) % len(systems)
    return list(systems[shift:] + systems[:shift])


async def run_bench(options: BenchOptions, base: Settings) -> BenchResult:
    result = BenchResult(options)
    previous = "start"
    for repetition in range(1, options.repeat + 1):
        for system in _chosen(rotated(LATENCY_SYSTEMS, repetition), options):
            settled = await _settle_before(repetition, options)
            _progress(
                f"[{repetition}/{options.repeat}] latency     {system:<11}"
                f" {options.rate_per_s:g}/s for {options.latency_duration_s:g} s ..."
            )
            latency = await _latency_run(options, base, system)
            latency.preceded_by, latency.settle_s = previous, settled
            _progress(
                f"    p50 {latency.latency_ms['p50']:.0f} ms  p99 {latency.latency_ms['p99']:.0f} ms"
                f"  achieved {latency.achieved_per_s:,.1f}/s"
            )
            result.latency.append(latency)
            previous = f"latency {system}"
        for system in _chosen(rotated(THROUGHPUT_SYSTEMS, repetition), options):
            payments = {
                "paystream": options.payments,
                METRICS_SYSTEM: options.payments,
                "naive": options.naive_payments,
                "passthrough": options.ceiling_payments,
                "dbceiling": options.payments,
            }[system]
            settled = await _settle_before(repetition, options)
            _progress(f"[{repetition}/{options.repeat}] throughput  {system:<11} {payments:,} payments ...")
            run = await _throughput_run(options, base, system, payments)
            run.preceded_by, run.settle_s = previous, settled
            _progress(f"    {run.rate_per_s:,.1f} payments/s sustained, drained in {run.drain_s:.1f} s")
            result.throughput.append(run)
            previous = f"throughput {system}"
    return result


def _chosen(systems: list[str], options: BenchOptions) -> list[str]:
    return [system for system in systems if not options.systems or system in options.systems]


async def _settle_before(repetition: int, options: BenchOptions) -> float:
    if options.settle_s_max <= 0:
        return 0.0
    settled = await settle(options.settle_s_max)
    if not settled.quiet:
        _progress(
            f"[{repetition}/{options.repeat}] the machine stayed busy ({settled.idle_share:.0%} idle)"
            f" for {settled.waited_s:.0f} s; measuring anyway"
        )
    return round(settled.waited_s, 1)


@contextlib.asynccontextmanager
async def _environment(options: BenchOptions, base: Settings, system: str) -> Any:
    """A run's own topics, database and four worker processes; all removed afterwards."""
    run_id = f"bench{system[:4]}{uuid.uuid4().hex[:6]}"
    settings = isolated_settings(base, run_id)
    await prepare_environment(settings)
    # paystream+metrics runs paystream's own workers, each with its metrics endpoint on.
    worker_system = "paystream" if system == METRICS_SYSTEM else system
    fleet = WorkerFleet(settings, options.work_dir / run_id, command=("-m", "paystream.bench.worker", worker_system))
    try:
        yield settings, fleet
    finally:
        await fleet.stop_all()
        await drop_database(settings)
        await delete_topics(settings)


async def _throughput_run(options: BenchOptions, base: Settings, system: str, payments: int) -> ThroughputRun:
    if system == "dbceiling":
        return await _ceiling_run(options, base, payments)
    async with _environment(options, base, system) as (settings, fleet):
        generator = PaymentGenerator(build_world(), options.seed, f"{settings.namespace}t")
        async with PaymentPublisher(settings, client_id="paystream-bench") as publisher:
            await publisher.publish_many(
                g.payment for g in generator.generate(payments, datetime.now(UTC), timedelta(microseconds=100))
            )
        observer = Observer(settings)
        stop = asyncio.Event()
        watching = asyncio.create_task(observer.run(stop))
        started_s = time.monotonic()
        ports: list[int] = []
        copies = options.stage_processes if system.startswith("paystream") else 1
        for stage in STAGE_NAMES:
            for _ in range(copies):
                extra = {}
                if system == METRICS_SYSTEM:
                    ports.append(free_port())
                    extra = {"PAYSTREAM_METRICS_PORT": str(ports[-1])}
                await fleet.start(stage, extra)
        scraper = Scraper(ports)
        if ports:
            scraper.start()
        try:
            await wait_complete(observer, payments, fleet, options.run_timeout_s, system)
        finally:
            stop.set()
            await watching
            await scraper.stop()
        if ports and scraper.scrapes == 0:
            raise BenchFailedError(f"{system}: no worker's /metrics answered during the run")
        drain_s = max(observer.completed_at_s) - started_s
        return ThroughputRun(system, payments, sustained_rate_per_s(observer.completed_at_s), drain_s)


async def _ceiling_run(options: BenchOptions, base: Settings, payments: int) -> ThroughputRun:
    """The stages' database work without Kafka, one process per stage (`paystream.bench.dbceiling_procs`)."""
    async with _environment(options, base, "dbceiling") as (settings, _fleet):
        ceiling = await run_ceiling_processes(settings, payments, options.seed)
    if ceiling.terminal != payments:
        raise BenchFailedError(f"dbceiling: {ceiling.terminal:,} of {payments:,} payments reached a terminal status")
    return ThroughputRun("dbceiling", payments, ceiling.rate_per_s, ceiling.elapsed_s)


async def _latency_run(options: BenchOptions, base: Settings, system: str) -> LatencyRun:
    async with _environment(options, base, system) as (settings, fleet):
        measured_prefix = f"{settings.namespace}m"
        observer = Observer(settings, counted=lambda payment_id: payment_id.startswith(measured_prefix))
        stop = asyncio.Event()
        watching = asyncio.create_task(observer.run(stop))
        for stage in STAGE_NAMES:
            await fleet.start(stage)
        world = build_world()
        try:
            # Warm-up: group joins, connections and caches, outside the measurement.
            warmup = PaymentGenerator(world, options.seed, f"{settings.namespace}w")
            async with PaymentPublisher(settings, client_id="paystream-bench-warmup") as publisher:
                await publisher.publish_many(
                    g.payment for g in warmup.generate(WARMUP_PAYMENTS, datetime.now(UTC), timedelta(0))
                )
            await wait_complete(observer, WARMUP_PAYMENTS, fleet, options.run_timeout_s, system)
            total = int(options.rate_per_s * options.latency_duration_s)
            generator = PaymentGenerator(world, options.seed + 1, measured_prefix)
            started_s = time.monotonic()
            await publish_at_rate(settings, generator, total, options.rate_per_s)
            await wait_complete(observer, WARMUP_PAYMENTS + total, fleet, options.run_timeout_s, system)
        finally:
            stop.set()
            await watching
        achieved = total / (max(observer.completed_at_s) - started_s)
        return LatencyRun(system, options.rate_per_s, total, achieved, summary_ms(observer.latency.overall))
