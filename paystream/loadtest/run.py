"""`paystream loadtest`: offered load at a fixed rate through the whole pipeline, measured downstream.

Latency is from a payment's `created_at` (stamped when it is published) to
the moment its first outcome (rejected, declined or cleared) is read from
payments.outcomes by an observer, the way a downstream system sees it.
Settlement happens later, at the cycle's cut-off, and is not on this path.
The stages run as four worker processes by default (`paystream.loadtest.pipeline`).
A warm-up at the offered rate goes first and is reported apart: group joins,
connections, the first produce to new topics and cold caches are not the
steady state. The synthetic world is sized for the offered load
(`paystream.loadtest.world`), and each second's outcome mix is reported, so a
long run stays a realistic mix and shows it does.
Consumer lag per stage is sampled every second. With a recording
(`LoadOptions.recording`, see `paystream.loadtest.recorded`) its payments are
offered instead of generated ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer

from paystream.db.pool import connect
from paystream.demo_data import DemoWorld
from paystream.generator import PaymentGenerator
from paystream.loadtest.measure import LatencyRecorder, Timeline, summary_ms
from paystream.loadtest.observe import first_outcomes, latency_us
from paystream.loadtest.pipeline import LoadPipeline, WorkerMode
from paystream.loadtest.recorded import PublishedCounter, RecordedLoad
from paystream.loadtest.world import world_for_load
from paystream.prepare import delete_topics, drop_database, isolated_settings, prepare_environment
from paystream.publisher import PaymentPublisher
from paystream.replay.player import Pace, play
from paystream.replay.recording import Recording
from paystream.replay.rewrite import IdRewriter
from paystream.settings import Settings
from paystream.topic_scan import topic_partitions
from topology.graph import MONEY_STAGES
from topology.topics import PAYMENTS_REQUESTED

LAG_SAMPLE_INTERVAL_S = 1.0


@dataclass(frozen=True)
class LoadOptions:
    rate: float
    duration_s: float
    seed: int = 1
    drain_timeout_s: float = 180.0
    out_dir: Path = Path("reports")
    keep_database: bool = False
    recording: RecordedLoad | None = None
    # Seconds of load at the offered rate before the measurement, reported apart.
    warmup_s: float = 5.0
    workers: WorkerMode = "processes"


@dataclass
class LoadResult:
    run_id: str
    options: LoadOptions
    published: int = 0
    completed: int = 0
    publish_s: float = 0.0
    total_s: float = 0.0
    latency: LatencyRecorder = field(default_factory=LatencyRecorder)
    timeline: Timeline = field(default_factory=Timeline)
    warmup: LatencyRecorder = field(default_factory=LatencyRecorder)
    warmup_published: int = 0
    payers: int = 0
    # From a recording: distinct payments sent (one outcome each) and values left to the dead letters.
    payments_distinct: int | None = None
    untouched: int = 0

    @property
    def outcomes_expected(self) -> int:
        return self.published if self.payments_distinct is None else self.payments_distinct

    def as_dict(self) -> dict[str, Any]:
        offered = self.published / self.publish_s if self.publish_s else 0.0
        recording = self.options.recording
        return {
            "run_id": self.run_id,
            "rate_offered_per_s": self.options.rate,
            "duration_s": self.options.duration_s,
            "published": self.published,
            "outcomes_expected": self.outcomes_expected,
            "completed": self.completed,
            "publish_rate_achieved_per_s": round(offered, 1),
            "throughput_per_s": round(self.completed / self.total_s, 1) if self.total_s else 0.0,
            "total_s": round(self.total_s, 2),
            "latency_ms": summary_ms(self.latency.overall),
            "workers": self.options.workers,
            "payers": self.payers,
            "warmup": {
                "duration_s": self.options.warmup_s,
                "published": self.warmup_published,
                "completed": self.warmup.count,
                "latency_ms": summary_ms(self.warmup.overall),
            },
            "outcomes": self.timeline.status_totals(),
            "timeline": self.timeline.as_rows(self.latency),
            **({} if recording is None else _recording_fields(recording, self.untouched)),
        }


def _recording_fields(recording: RecordedLoad, untouched: int) -> dict[str, Any]:
    return {
        "recording": str(recording.path),
        "recording_records": recording.records,
        "recording_speed": recording.speed,
        "recording_untouched": untouched,
    }


async def run_loadtest(options: LoadOptions, base: Settings) -> LoadResult:
    run_id = f"load{uuid.uuid4().hex[:6]}"
    settings = isolated_settings(base, run_id).with_overrides(
        settlement_cycle_s=10, settlement_grace_s=2, settlement_close_interval_ms=500
    )
    world = world_for_load(options.rate, options.duration_s + options.warmup_s)
    await prepare_environment(settings, world=world)
    result = LoadResult(run_id, options, payers=len(world.payers))
    pipeline = LoadPipeline(settings, options.workers, options.out_dir / run_id / "workers")
    stop = asyncio.Event()
    observing: list[asyncio.Task[None]] = []
    try:
        await pipeline.start()
        generator = PaymentGenerator(world, options.seed, run_id)
        if options.warmup_s > 0:
            await _warm_up(settings, options, world, run_id, result, pipeline, stop, observing)
        started = time.monotonic()
        observing += [
            asyncio.create_task(_observe(settings, result, started, stop, f"{run_id}w")),
            asyncio.create_task(_sample_lag(settings, result.timeline, started, stop)),
        ]
        if options.recording is None:
            await _publish_at_rate(settings, options, generator, run_id, result, started)
        else:
            await _publish_recording(settings, options.recording, run_id, result, started)
        deadline = time.monotonic() + options.drain_timeout_s
        while result.completed < result.outcomes_expected and time.monotonic() < deadline:
            pipeline.check()
            await asyncio.sleep(0.2)
        result.total_s = time.monotonic() - started
    finally:
        stop.set()
        await asyncio.gather(*observing, return_exceptions=True)
        await pipeline.stop()
        if not options.keep_database:
            # Its topics too: a broker left with every past run's partitions works harder for the next run.
            await drop_database(settings)
            await delete_topics(settings)
    return result


async def _warm_up(
    settings: Settings,
    options: LoadOptions,
    world: DemoWorld,
    run_id: str,
    result: LoadResult,
    pipeline: LoadPipeline,
    stop: asyncio.Event,
    observing: list[asyncio.Task[None]],
) -> None:
    """Load at the offered rate for warmup_s with ids of their own, until each has its outcome."""
    warm_stop = asyncio.Event()
    warm = LoadResult(run_id, options)
    started = time.monotonic()
    watcher = asyncio.create_task(_observe(settings, warm, started, warm_stop, None))
    try:
        generator = PaymentGenerator(world, options.seed + 1, f"{run_id}w")
        total = max(1, int(options.rate * options.warmup_s))
        await _publish_generated(settings, generator, total, options.rate, warm, started, f"{run_id}-warmup")
        deadline = time.monotonic() + options.drain_timeout_s
        while warm.completed < total and time.monotonic() < deadline:
            pipeline.check()
            await asyncio.sleep(0.2)
    finally:
        warm_stop.set()
        await asyncio.gather(watcher, return_exceptions=True)
    result.warmup, result.warmup_published = warm.latency, warm.published


async def _publish_at_rate(
    settings: Settings,
    options: LoadOptions,
    generator: PaymentGenerator,
    run_id: str,
    result: LoadResult,
    started: float,
) -> None:
    total = int(options.rate * options.duration_s)
    await _publish_generated(settings, generator, total, options.rate, result, started, f"{run_id}-load")
    result.publish_s = time.monotonic() - started


async def _publish_generated(
    settings: Settings,
    generator: PaymentGenerator,
    total: int,
    rate: float,
    result: LoadResult,
    started: float,
    client_id: str,
) -> None:
    interval = 1.0 / rate
    async with PaymentPublisher(settings, client_id=client_id) as publisher:
        for index, generated in enumerate(generator.generate(total, datetime.now(UTC), timedelta(0))):
            ahead = started + index * interval - time.monotonic()
            if ahead > 0:
                await publisher.flush()
                await asyncio.sleep(ahead)
            # Stamp creation at send time: latency then measures the pipeline, not the generator.
            payment = msgspec.structs.replace(generated.payment, created_at=datetime.now(UTC))
            await publisher.publish(payment)
            result.published += 1
            result.timeline.count(result.timeline.published, int(time.monotonic() - started))


async def _publish_recording(
    settings: Settings, recording: RecordedLoad, run_id: str, result: LoadResult, started: float
) -> None:
    """The recording's records at its scaled pace; ids salted with the run id, so each run is new traffic."""
    rewriter = IdRewriter(run_id, settings.record_bytes_max, track_ids=True)
    counter = PublishedCounter(result.timeline, started)
    pace = Pace(recording.speed, recording.rate_per_s_max)
    records = Recording(recording.path).records()
    topic = settings.topic(PAYMENTS_REQUESTED)
    report = await play(settings, topic, records, pace, rewriter, counter, client_id=f"{run_id}-load")
    result.published = report.sent
    result.publish_s = time.monotonic() - started
    result.payments_distinct = len(rewriter.ids or ())
    result.untouched = report.untouched


async def _observe(
    settings: Settings, result: LoadResult, started: float, stop: asyncio.Event, skip_prefix: str | None
) -> None:
    """Read outcomes like a downstream system; the first outcome of each payment completes it.

    Payments whose id starts with `skip_prefix` (the warm-up's) are not this measurement's.
    """
    async for received_at, outcomes in first_outcomes(settings, stop):
        second = int(time.monotonic() - started)
        for outcome in outcomes:
            if skip_prefix is not None and outcome.payment_id.startswith(skip_prefix):
                continue
            result.latency.record(second, latency_us(outcome, received_at))
            result.completed += 1
            result.timeline.count(result.timeline.completed, second)
            result.timeline.count_status(outcome.status, second)


async def _sample_lag(settings: Settings, timeline: Timeline, started: float, stop: asyncio.Event) -> None:
    """Records behind per stage, every second: end offsets minus what the stage has processed.

    Processed is the stage's offset row in PostgreSQL (stored with the batch's
    effects), not Kafka's committed offset: that one trails by the commits a
    stage defers (`offset_commit_interval_ms`, 250 records at 1,000/s).
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    connection = await connect(settings)
    try:
        while not stop.is_set():
            second = int(time.monotonic() - started)
            rows = await connection.fetch(
                "SELECT group_id, topic, partition, next_offset FROM stage_offsets WHERE group_id = ANY($1::text[])",
                [settings.group(stage.name) for stage in MONEY_STAGES],
            )
            processed = {(r["group_id"], r["topic"], r["partition"]): r["next_offset"] for r in rows}
            for stage in MONEY_STAGES:
                topic = settings.topic(stage.consumes[0])
                partitions = await topic_partitions(consumer, topic)
                ends = await consumer.end_offsets(partitions)
                group = settings.group(stage.name)
                behind = sum(ends[tp] - max(processed.get((group, topic, tp.partition), 0), 0) for tp in partitions)
                timeline.lag.setdefault(stage.name, {})[second] = behind
            with contextlib.suppress(TimeoutError):  # the usual case: a second passed, sample again
                await asyncio.wait_for(stop.wait(), LAG_SAMPLE_INTERVAL_S)
    finally:
        await connection.close()
        await consumer.stop()
