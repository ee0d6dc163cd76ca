"""`paystream bench --history N`: the database ceiling and paystream's throughput, empty vs a loaded history.

Issue 12 part 4 asks what the data's growth costs: with 20 million past
payments in the database, both figures should stay within 20% of the empty
database's. One run measures both, on the same machine, in this order:

1. the database ceiling (`paystream.bench.dbceiling_procs`: the stages' own
   database work, a process per stage, no Kafka) on an empty database
   (migrated and seeded with the demo world), as `paystream bench` measures it;
2. a second database, seeded the same way, given N past payments
   (`paystream.bench.history_load`) and VACUUM ANALYZE'd: the database ceiling;
3. paystream's sustained throughput (its four stages as four worker
   processes, as `paystream bench` runs them) on another empty database;
4. paystream's throughput on the history database, with topics and
   consumer groups of its own.

Why fresh empty databases: a database that holds the ceiling's 40,000
payments and was analyzed after them has statistics without one payment
`approved` or `held` (none is in flight then); funds' and clearing's updates
of those payments by status then got a nested loop over a sequential scan of
`payments`, quadratic in the batch (measured: paystream 996/s there, against
about 4,000/s on a fresh database; docs/performance.md). `paystream bench`
never measures on such a database, and neither does this comparison's empty side.

Why the wait before step 4: both measurements on the history database use
the demo world's payers, and the risk stage's 10-minute velocity window would
refuse most of the second run's payments if it began within 10 minutes of the
first (40,000 payments give each payer about 20, the 10-minute count limit).
Step 3 runs during that wait. The payments measured on both sides meet the
same rules: their outcome mix is reported to show it. The history database
lives only between its two measurements; every database is dropped at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from paystream.bench.dbceiling_procs import run_ceiling_processes
from paystream.bench.history_load import LoadReport, load_history
from paystream.bench.measure import ratio, sustained_rate_per_s
from paystream.bench.observe import BenchFailedError, Observer, wait_complete
from paystream.bench.settle import settle
from paystream.chaos.processes import WorkerFleet
from paystream.db.pool import connect
from paystream.demo_data import build_world
from paystream.generator import PaymentGenerator
from paystream.prepare import delete_topics, drop_database, isolated_settings, prepare_environment
from paystream.publisher import PaymentPublisher
from paystream.settings import Settings
from topology.apply import apply_topology
from workers import STAGE_NAMES
from workers.risk_rules import VELOCITY_SHORT_WINDOW

# The goal: each figure on the history database at least this share of the empty database's.
GOAL_HISTORY_VS_EMPTY = 0.8
# After the velocity window, a margin for the clock and the ceiling's last payments' created_at.
WINDOW_MARGIN_S = 15.0


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class HistoryOptions:
    history_payments: int
    # Backlog of the ceiling and of paystream alike: `paystream bench`'s default.
    payments: int = 40_000
    run_timeout_s: float = 300.0
    work_dir: Path = Path("reports/bench")
    seed: int = 7


@dataclass
class Measured:
    """One database's two figures, and what became of the payments measured (their statuses)."""

    database: str
    ceiling_per_s: float = 0.0
    ceiling_s: float = 0.0
    ceiling_statuses: dict[str, int] = field(default_factory=dict)
    paystream_per_s: float = 0.0
    paystream_drain_s: float = 0.0
    paystream_statuses: dict[str, int] = field(default_factory=dict)
    ceiling_ended_s: float = 0.0


@dataclass
class HistoryResult:
    options: HistoryOptions
    empty: Measured
    history: Measured
    load: LoadReport | None = None
    empty_database_bytes: int = 0

    def ratios(self) -> dict[str, float]:
        return {
            "dbceiling": ratio(self.history.ceiling_per_s, self.empty.ceiling_per_s),
            "paystream": ratio(self.history.paystream_per_s, self.empty.paystream_per_s),
        }


async def run_history_bench(options: HistoryOptions, base: Settings) -> HistoryResult:
    """Both sides, measured as the module docstring says; every database and topic removed afterwards."""
    tag = uuid.uuid4().hex[:6]
    history_db = isolated_settings(base, f"benchhh{tag}")
    result = HistoryResult(options, Measured("empty"), Measured("history"))
    async with _fresh(isolated_settings(base, f"benchhc{tag}")) as empty_db:
        result.empty_database_bytes = await _database_bytes(empty_db)
        await _ceiling(options, empty_db, result.empty)
    try:
        await prepare_environment(history_db)
        _progress(f"history: loading {options.history_payments:,} past payments into {history_db.namespace[:-1]}")
        result.load = await load_history(history_db, options.history_payments)
        await _ceiling(options, history_db, result.history)
        async with _fresh(isolated_settings(base, f"benchhp{tag}")) as empty_db:
            await _paystream(options, empty_db, result.empty)
        await _wait_out_velocity_window(result.history)
        await _paystream(options, history_db, result.history)
    finally:
        await drop_database(history_db)
        await delete_topics(history_db)
    return result


@contextlib.asynccontextmanager
async def _fresh(settings: Settings) -> AsyncIterator[Settings]:
    """An empty database (migrated, seeded with the demo world) and its topics; removed afterwards."""
    try:
        await prepare_environment(settings)
        yield settings
    finally:
        await drop_database(settings)
        await delete_topics(settings)


async def _database_bytes(settings: Settings) -> int:
    connection = await connect(settings)
    try:
        return int(await connection.fetchval("SELECT pg_database_size(current_database())"))
    finally:
        await connection.close()


async def _statuses(settings: Settings, prefix: str) -> dict[str, int]:
    """How many of the payments whose id starts with `prefix` ended in each status."""
    connection = await connect(settings)
    try:
        rows = await connection.fetch(
            "SELECT status, count(*) AS n FROM payments WHERE payment_id LIKE $1 || '%' GROUP BY status ORDER BY 1",
            prefix,
        )
    finally:
        await connection.close()
    return {row["status"]: int(row["n"]) for row in rows}


async def _ceiling(options: HistoryOptions, settings: Settings, measured: Measured) -> None:
    await _settle()
    _progress(f"history: dbceiling on the {measured.database} database, {options.payments:,} payments ...")
    run = await run_ceiling_processes(settings, options.payments, options.seed)
    measured.ceiling_ended_s = time.monotonic()
    if run.terminal != options.payments:
        raise BenchFailedError(
            f"dbceiling ({measured.database}): {run.terminal:,} of {options.payments:,} payments reached a terminal"
            " status"
        )
    measured.ceiling_per_s, measured.ceiling_s = run.rate_per_s, run.elapsed_s
    # The ceiling names its payments after the namespace, its mode and the seed.
    measured.ceiling_statuses = await _statuses(settings, f"{settings.namespace}{run.mode}{options.seed}-")
    _progress(f"    {run.rate_per_s:,.0f} payments/s in {run.elapsed_s:.1f} s; {measured.ceiling_statuses}")


async def _settle() -> None:
    """A quiet machine before each measurement, as `paystream bench` has (`paystream.bench.settle`)."""
    settled = await settle()
    if not settled.quiet:
        _progress(f"history: the machine stayed busy ({settled.idle_share:.0%} idle) for {settled.waited_s:.0f} s;"
                  " measuring anyway")  # fmt: skip


async def _wait_out_velocity_window(measured: Measured) -> None:
    """Until the ceiling's payments are out of the 10-minute velocity window of the payments to come."""
    # The ceiling's payments were created before it ended: its end is a safe bound.
    ready_s = measured.ceiling_ended_s + VELOCITY_SHORT_WINDOW.total_seconds() + WINDOW_MARGIN_S
    wait_s = ready_s - time.monotonic()
    if wait_s > 0:
        _progress(
            f"history: waiting {wait_s:.0f} s until the {measured.database} database's ceiling payments leave the"
            " risk stage's 10-minute velocity window (so paystream's payments meet the same rules as on the empty one)"
        )
        await asyncio.sleep(wait_s)


async def _paystream(options: HistoryOptions, database: Settings, measured: Measured) -> None:
    """paystream's four worker processes drain a backlog in `database`, with topics and groups of their own."""
    run_id = f"benchhp{uuid.uuid4().hex[:6]}"
    settings = database.with_overrides(namespace=f"{run_id}.")
    await apply_topology(settings)
    fleet = WorkerFleet(settings, options.work_dir / run_id, command=("-m", "paystream.bench.worker", "paystream"))
    prefix = f"{settings.namespace}t"
    try:
        generator = PaymentGenerator(build_world(), options.seed, prefix)
        async with PaymentPublisher(settings, client_id="paystream-bench") as publisher:
            await publisher.publish_many(
                g.payment for g in generator.generate(options.payments, datetime.now(UTC), timedelta(microseconds=100))
            )
        await _settle()
        _progress(f"history: paystream on the {measured.database} database, {options.payments:,} payments ...")
        observer = Observer(settings)
        stop = asyncio.Event()
        watching = asyncio.create_task(observer.run(stop))
        started_s = time.monotonic()
        for stage in STAGE_NAMES:
            await fleet.start(stage)
        try:
            await wait_complete(observer, options.payments, fleet, options.run_timeout_s, "paystream")
        finally:
            stop.set()
            await watching
    finally:
        await fleet.stop_all()
        await delete_topics(settings)
    measured.paystream_per_s = sustained_rate_per_s(observer.completed_at_s)
    measured.paystream_drain_s = max(observer.completed_at_s) - started_s
    measured.paystream_statuses = await _statuses(database, prefix)
    _progress(
        f"    {measured.paystream_per_s:,.0f} payments/s sustained, drained in {measured.paystream_drain_s:.1f} s;"
        f" {measured.paystream_statuses}"
    )
