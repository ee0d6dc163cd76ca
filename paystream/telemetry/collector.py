"""The Prometheus metrics of one worker process, read from the stage loops at scrape time.

A custom collector, not prometheus_client's Counter and Histogram objects:
the loops already count everything (`LoopStats`, `BatchObservations`), so a
batch pays nothing extra for the metrics and a scrape reports exactly the
loops' counts. Names, types and labels are listed in docs/operations.md
("Metrics"); dashboards and alerts are built on them, so they do not change.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from paystream.stage.observe import Buckets
from paystream.telemetry.lag import stage_lags

log = structlog.get_logger("paystream.telemetry")

# (metric name, LoopStats field, help): counters labelled by stage.
STAGE_COUNTERS = (
    ("paystream_stage_records_total", "records", "Input records in committed batches (dead letters included)."),
    ("paystream_stage_batches_total", "batches", "Batches committed (all four steps done)."),
    ("paystream_stage_outputs_total", "outputs", "Events and dead letters produced and acknowledged."),
    ("paystream_stage_dead_letters_total", "dead_letters", "Input records refused: invalid or poison."),
    ("paystream_stage_poison_isolations_total", "isolations", "Batch attempts that isolated poison records."),
    ("paystream_stage_poisoned_records_total", "poisoned", "Records isolated as poison (per attempt)."),
    ("paystream_stage_fenced_batches_total", "fenced", "Batches rolled back: another consumer owned a partition."),
    ("paystream_stage_retries_total", "retries", "Retries of a transient failure (outage or conflict)."),
    ("paystream_stage_commit_failures_total", "commit_failures", "Offset commits refused after a rebalance."),
    ("paystream_stage_rebalances_total", "rebalances", "Partition assignments received."),
    ("paystream_stage_ticks_total", "ticks", "Timer runs that did work (settlement closes, hold expiries)."),
)
# Every few seconds at most: a COUNT over settlement_batches is not free, and never on a batch's path.
SETTLEMENT_COUNT_INTERVAL_S = 5.0
SETTLEMENT_COUNT_TIMEOUT_S = 5.0


@dataclass(slots=True)
class SettlementCounts:
    """settlement_batches by status, as last counted (None until the first count answered)."""

    open: int | None = None
    closed: int | None = None
    counted_at: float | None = None

    async def refresh_forever(self, pool: Any, interval_s: float = SETTLEMENT_COUNT_INTERVAL_S) -> None:
        """Count every `interval_s`; a failed count keeps the last values (the stage itself reports outages)."""
        while True:
            try:
                async with pool.acquire(timeout=SETTLEMENT_COUNT_TIMEOUT_S) as connection:
                    row = await connection.fetchrow(
                        "SELECT count(*) FILTER (WHERE status = 'open') AS open,"
                        " count(*) FILTER (WHERE status = 'closed') AS closed FROM settlement_batches",
                        timeout=SETTLEMENT_COUNT_TIMEOUT_S,
                    )
                self.open, self.closed, self.counted_at = row["open"], row["closed"], time.monotonic()
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                log.debug("settlement batch count failed", error=f"{type(error).__name__}: {error}")
            await asyncio.sleep(interval_s)


def bucket_label(bound: float) -> str:
    """A bucket's `le` label as Prometheus writes it: 0.5, 1.0, +Inf."""
    return "+Inf" if bound == float("inf") else repr(float(bound))


def histogram(name: str, documentation: str, per_stage: Mapping[str, Buckets]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=["stage"])
    for stage, buckets in per_stage.items():
        family.add_metric(
            [stage],
            buckets=[(bucket_label(bound), count) for bound, count in buckets.cumulative()],
            sum_value=buckets.total,
        )
    return family


class StageCollector(Collector):
    """Reads the loops (and the pool, and the settlement counts) each time Prometheus scrapes."""

    def __init__(self, loops: Mapping[str, Any], pool: Any, settlement: SettlementCounts | None) -> None:
        self.loops = loops
        self.pool = pool
        self.settlement = settlement

    def collect(self) -> Iterator[Metric]:
        yield from self._counters()
        yield from self._histograms()
        yield from self._stage_gauges()
        yield from self._process_gauges()

    def _counters(self) -> Iterator[Metric]:
        for name, stats_field, documentation in STAGE_COUNTERS:
            family = CounterMetricFamily(name, documentation, labels=["stage"])
            for stage, loop in self.loops.items():
                family.add_metric([stage], getattr(loop.stats, stats_field))
            yield family

    def _histograms(self) -> Iterator[Metric]:
        observed = {stage: loop.observed for stage, loop in self.loops.items()}
        yield histogram(
            "paystream_stage_batch_duration_seconds",
            "Time from decoding a batch to committing its offsets.",
            {stage: o.duration_s for stage, o in observed.items()},
        )
        yield histogram(
            "paystream_stage_batch_records",
            "Records per committed batch.",
            {stage: o.records for stage, o in observed.items()},
        )
        yield histogram(
            "paystream_stage_event_latency_seconds",
            "From the payment's (or request's) created_at to the acknowledgement of this stage's outputs for it.",
            {stage: o.latency_s for stage, o in observed.items()},
        )

    def _stage_gauges(self) -> Iterator[Metric]:
        now = time.monotonic()
        lag = GaugeMetricFamily(
            "paystream_stage_consumer_lag_records",
            "Broker high-water mark minus the loop's next offset, per claimed partition.",
            labels=["stage", "topic", "partition"],
        )
        age = GaugeMetricFamily(
            "paystream_stage_last_batch_age_seconds",
            "Seconds since the last committed batch (since the loop started, before the first).",
            labels=["stage"],
        )
        assigned = GaugeMetricFamily(
            "paystream_stage_assigned_partitions", "Partitions assigned to the stage's consumer.", labels=["stage"]
        )
        for stage, loop in self.loops.items():
            for partition, records in sorted(stage_lags(loop).items()):
                lag.add_metric([stage, loop.topic, str(partition)], records)
            age.add_metric([stage], loop.stats.last_batch_age_s(now))
            assigned.add_metric([stage], len(loop.consumer.assignment()))
        yield from (lag, age, assigned)

    def _process_gauges(self) -> Iterator[Metric]:
        if self.settlement is not None and self.settlement.counted_at is not None:
            batches = GaugeMetricFamily(
                "paystream_settlement_batches",
                f"Settlement batches by status, counted at most every {SETTLEMENT_COUNT_INTERVAL_S:g} s.",
                labels=["status"],
            )
            batches.add_metric(["open"], self.settlement.open or 0)
            batches.add_metric(["closed"], self.settlement.closed or 0)
            yield batches
        size = self.pool.get_size()
        yield GaugeMetricFamily(
            "paystream_db_pool_connections_in_use",
            "PostgreSQL connections of this process's pool handed out now.",
            value=size - self.pool.get_idle_size(),
        )
        yield GaugeMetricFamily(
            "paystream_db_pool_connections_max",
            "The most connections this process's pool may open.",
            value=self.pool.get_max_size(),
        )
