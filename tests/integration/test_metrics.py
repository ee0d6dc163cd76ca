"""/metrics, /healthz and /readyz of a running pipeline, checked against what it processed.

One environment for the module: PAYMENTS generated payments and the INVALID
records published, then all four stages run in this process (one metrics port,
labelled by stage) until every payment is terminal and every settlement batch
published. The scrapes are checked exactly: each stage's records equal its input
topic's records, risk's dead letters the invalid records, every histogram's
count the batches.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
import pytest

from paystream.db.pool import connect
from paystream.prepare import drop_database
from paystream.runner import run_stages
from paystream.settings import Settings
from paystream.stage.stats import LoopStats
from tests.support.pipeline import fresh_environment, generate, publish, wait_terminal
from tests.support.telemetry import Sample, end_offsets_total, free_port, get, labelled, parse, scrape, until, value
from topology.topics import FUNDS_HELD, PAYMENTS_APPROVED, PAYMENTS_CLEARED, PAYMENTS_REQUESTED
from workers import STAGE_NAMES

pytestmark = pytest.mark.integration

PAYMENTS = 300
INVALID = [b"\x00\x01garbage", b'{"payment_id": "cut', b"[]", b'{"schema":"payment.requested","v":1}']
INPUT_TOPICS = {"risk": PAYMENTS_REQUESTED, "funds": PAYMENTS_APPROVED, "clearing": FUNDS_HELD,
                "settlement": PAYMENTS_CLEARED}  # fmt: skip
READY_S_MAX = 120.0
DRAIN_S_MAX = 180.0
STOP_S_MAX = 60.0


@dataclass
class Observed:
    settings: Settings
    ready: tuple[int, str, str]
    health: tuple[int, str, str]
    scraped: tuple[int, str]  # status and content type of a scrape during the run
    during: dict[Sample, float]
    after: dict[Sample, float]
    inputs: dict[str, tuple[int, int]]  # stage -> (records on its input topic, partitions)
    approved: int
    closed_batches: int
    stats: dict[str, LoopStats]


def _records(samples: dict[Sample, float], stage: str) -> float:
    return value(samples, "paystream_stage_records_total", stage=stage)


@pytest.fixture(scope="module")
async def observed() -> AsyncIterator[Observed]:
    base = await fresh_environment("met")
    port = free_port()
    settings = base.with_overrides(metrics_port=port)
    generated = generate(PAYMENTS, settings.namespace.rstrip("."), seed=71)
    await publish(settings, generated, raw=INVALID)
    stop = asyncio.Event()
    run = asyncio.create_task(run_stages(settings, STAGE_NAMES, stop=stop))
    try:
        ready = await until(lambda: get(port, "/readyz"), lambda r: r[0] == 200, "/readyz 200", READY_S_MAX, run)
        health = await get(port, "/healthz")
        status, content_type, body = await get(port, "/metrics")
        during = parse(body)
        await wait_terminal(settings, [g.payment.payment_id for g in generated], timeout_s=DRAIN_S_MAX)
        inputs = {stage: await end_offsets_total(settings, settings.topic(t)) for stage, t in INPUT_TOPICS.items()}
        connection = await connect(settings)
        try:
            approved = await connection.fetchval("SELECT count(*) FROM risk_decisions WHERE decision = 'approved'")
            closed = await connection.fetchval("SELECT count(*) FROM settlement_batches WHERE status = 'closed'")
        finally:
            await connection.close()

        def drained(samples: dict[Sample, float]) -> bool:
            counted = labelled(samples, "paystream_settlement_batches", status="closed")
            return counted == {(("status", "closed"),): closed} and all(
                _records(samples, stage) == inputs[stage][0] for stage in STAGE_NAMES
            )

        after = await until(lambda: scrape(port), drained, "every input record counted", DRAIN_S_MAX, run)
    finally:
        stop.set()
        stats = await asyncio.wait_for(run, STOP_S_MAX)
    yield Observed(settings, ready, health, (status, content_type), during, after, inputs, approved, closed, stats)
    await drop_database(settings)


async def test_readyz_is_200_after_assignment_with_every_check_named(observed: Observed) -> None:
    status, content_type, body = observed.ready
    assert (status, content_type) == (200, "application/json")
    answer = orjson.loads(body)
    assert answer == {
        "ready": True,
        "failed": [],
        "checks": {**{f"stage:{stage}": "ok" for stage in STAGE_NAMES}, "kafka": "ok", "postgres": "ok"},
    }


async def test_healthz_is_200_while_running(observed: Observed) -> None:
    status, _, body = observed.health
    assert status == 200
    assert [line.split(":")[0] for line in body.splitlines()] == sorted(STAGE_NAMES)


async def test_a_scrape_during_the_run_has_every_stage_counter(observed: Observed) -> None:
    for name in ("records", "batches", "outputs", "dead_letters", "poison_isolations", "poisoned_records",
                 "fenced_batches", "retries", "commit_failures", "rebalances", "ticks"):  # fmt: skip
        for stage in STAGE_NAMES:
            assert value(observed.during, f"paystream_stage_{name}_total", stage=stage) >= 0
    # Each consumer joined once before /readyz answered 200; counters only grow.
    assert all(value(observed.during, "paystream_stage_rebalances_total", stage=s) >= 1 for s in STAGE_NAMES)
    for stage in STAGE_NAMES:
        assert 0 <= _records(observed.during, stage) <= _records(observed.after, stage), stage


async def test_records_and_dead_letters_are_counted_exactly(observed: Observed) -> None:
    after, inputs = observed.after, observed.inputs
    assert inputs["risk"][0] == PAYMENTS + len(INVALID)
    assert inputs["funds"][0] == observed.approved  # one approval event each: no replay in this run
    for stage in STAGE_NAMES:
        assert _records(after, stage) == inputs[stage][0], stage
        assert _records(after, stage) == observed.stats[stage].records, stage
        assert value(after, "paystream_stage_batches_total", stage=stage) == observed.stats[stage].batches >= 1
    dead_letters = {stage: value(after, "paystream_stage_dead_letters_total", stage=stage) for stage in STAGE_NAMES}
    assert dead_letters == {"risk": len(INVALID), "funds": 0, "clearing": 0, "settlement": 0}
    # No poison, no fencing, no commit refused in a quiet run.
    for name in ("poison_isolations", "poisoned_records", "fenced_batches", "commit_failures"):
        assert {value(after, f"paystream_stage_{name}_total", stage=s) for s in STAGE_NAMES} == {0}, name
    assert value(after, "paystream_stage_ticks_total", stage="settlement") >= 1  # the batches closed


async def test_histogram_counts_are_the_batches_and_the_records(observed: Observed) -> None:
    after = observed.after
    for stage in STAGE_NAMES:
        batches = value(after, "paystream_stage_batches_total", stage=stage)
        records = _records(after, stage)
        assert value(after, "paystream_stage_batch_duration_seconds_count", stage=stage) == batches
        assert value(after, "paystream_stage_batch_records_count", stage=stage) == batches
        assert value(after, "paystream_stage_batch_records_sum", stage=stage) == records
        assert value(after, "paystream_stage_batch_records_bucket", stage=stage, le="+Inf") == batches
        assert value(after, "paystream_stage_batch_duration_seconds_sum", stage=stage) > 0
        # Every valid input record has a payment time here: the invalid ones (risk) were never decoded.
        valid = records - (len(INVALID) if stage == "risk" else 0)
        assert value(after, "paystream_stage_event_latency_seconds_count", stage=stage) == valid
        assert value(after, "paystream_stage_event_latency_seconds_bucket", stage=stage, le="+Inf") == valid
    # At most 100 records a batch (fast_settings): no batch in a larger bucket than 100.
    assert value(after, "paystream_stage_batch_records_bucket", stage="risk", le="100.0") == value(
        after, "paystream_stage_batches_total", stage="risk"
    )


async def test_gauges_once_drained(observed: Observed) -> None:
    after, settings = observed.after, observed.settings
    for stage, topic in INPUT_TOPICS.items():
        partitions = observed.inputs[stage][1]
        assert value(after, "paystream_stage_assigned_partitions", stage=stage) == partitions
        lags = labelled(after, "paystream_stage_consumer_lag_records", stage=stage, topic=settings.topic(topic))
        # One sample per claimed partition whose high-water mark a fetch told; nothing left behind.
        assert 1 <= len(lags) <= partitions, stage
        assert set(lags.values()) == {0}, stage
        assert value(after, "paystream_stage_last_batch_age_seconds", stage=stage) >= 0
    assert labelled(after, "paystream_settlement_batches") == {
        (("status", "closed"),): observed.closed_batches,
        (("status", "open"),): 0,
    }
    assert observed.closed_batches >= 1
    assert value(after, "paystream_db_pool_connections_max") == settings.db_pool_size_max * len(STAGE_NAMES)
    assert 0 <= value(after, "paystream_db_pool_connections_in_use") <= settings.db_pool_size_max * len(STAGE_NAMES)


async def test_metrics_are_the_prometheus_text_format_and_stop_with_the_run(observed: Observed) -> None:
    assert observed.scraped == (200, "text/plain; version=0.0.4; charset=utf-8")
    with pytest.raises(OSError, match=r"Connect call failed|Cannot connect"):
        await get(observed.settings.metrics_port, "/metrics")
