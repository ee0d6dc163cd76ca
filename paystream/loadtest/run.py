"""`paystream loadtest`: offered load at a fixed rate through the whole pipeline, measured downstream.

Latency is from a payment's `created_at` (stamped when it is published) to
the moment its first outcome (rejected, declined or cleared) is read from
payments.outcomes by an observer, the way a downstream system sees it.
Settlement happens later, at the cycle's cut-off, and is not on this path.
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
from aiokafka.admin import AIOKafkaAdminClient

from paystream.demo_data import build_world
from paystream.generator import PaymentGenerator
from paystream.loadtest.measure import LatencyRecorder, Timeline, summary_ms
from paystream.loadtest.observe import first_outcomes, latency_us
from paystream.loadtest.recorded import PublishedCounter, RecordedLoad
from paystream.prepare import drop_database, isolated_settings, prepare_environment
from paystream.publisher import PaymentPublisher
from paystream.replay.player import Pace, play
from paystream.replay.recording import Recording
from paystream.replay.rewrite import IdRewriter
from paystream.runner import run_stages
from paystream.settings import Settings
from paystream.topic_scan import topic_partitions
from topology.graph import MONEY_STAGES
from topology.topics import PAYMENTS_REQUESTED
from workers import STAGE_NAMES

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
    await prepare_environment(settings)
    result = LoadResult(run_id, options)
    stop = asyncio.Event()
    pipeline = asyncio.create_task(run_stages(settings, STAGE_NAMES, stop=stop))
    started = time.monotonic()
    observer = asyncio.create_task(_observe(settings, result, started, stop))
    lag = asyncio.create_task(_sample_lag(settings, result.timeline, started, stop))
    try:
        if options.recording is None:
            await _publish_at_rate(settings, options, run_id, result, started)
        else:
            await _publish_recording(settings, options.recording, run_id, result, started)
        deadline = time.monotonic() + options.drain_timeout_s
        while result.completed < result.outcomes_expected and time.monotonic() < deadline:
            if pipeline.done():
                pipeline.result()  # surfaces a stage's error
            await asyncio.sleep(0.2)
        result.total_s = time.monotonic() - started
    finally:
        stop.set()
        await asyncio.gather(pipeline, observer, lag, return_exceptions=True)
        if not options.keep_database:
            await drop_database(settings)
    return result


async def _publish_at_rate(
    settings: Settings, options: LoadOptions, run_id: str, result: LoadResult, started: float
) -> None:
    generator = PaymentGenerator(build_world(), options.seed, run_id)
    total = int(options.rate * options.duration_s)
    interval = 1.0 / options.rate
    async with PaymentPublisher(settings, client_id=f"{run_id}-load") as publisher:
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
    result.publish_s = time.monotonic() - started


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


async def _observe(settings: Settings, result: LoadResult, started: float, stop: asyncio.Event) -> None:
    """Read outcomes like a downstream system; the first outcome of each payment completes it."""
    async for received_at, outcomes in first_outcomes(settings, stop):
        second = int(time.monotonic() - started)
        for outcome in outcomes:
            result.latency.record(second, latency_us(outcome, received_at))
            result.completed += 1
            result.timeline.count(result.timeline.completed, second)


async def _sample_lag(settings: Settings, timeline: Timeline, started: float, stop: asyncio.Event) -> None:
    """Records behind per stage: end offsets minus the group's committed offsets, every second."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        while not stop.is_set():
            second = int(time.monotonic() - started)
            for stage in MONEY_STAGES:
                topic = settings.topic(stage.consumes[0])
                partitions = await topic_partitions(consumer, topic)
                ends = await consumer.end_offsets(partitions)
                committed = await admin.list_consumer_group_offsets(settings.group(stage.name))
                behind = sum(
                    ends[tp] - (committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0)
                    for tp in partitions
                )
                timeline.lag.setdefault(stage.name, {})[second] = behind
            with contextlib.suppress(TimeoutError):  # the usual case: a second passed, sample again
                await asyncio.wait_for(stop.wait(), LAG_SAMPLE_INTERVAL_S)
    finally:
        await consumer.stop()
        await admin.close()
