"""A realistic payment history, bulk-loaded server-side into a benchmark database (issue 12 part 4).

What a history is: `payments` past payments of the demo world's payers and
merchants, spread over the last 30 days, each with the rows the stages would
have written for it (risk decision, payment, hold, clearing journal and its
entries, clearing, settlement item), the merchants' batches closed and paid
out once their cut-off passed, each merchant-day's running risk total, and
the payers' daily top-ups that paid for it (deposit request, operation,
journal), so every balance agrees with the ledger: `paystream reconcile`
finds nothing on a loaded history (tests/integration/test_bench_history.py).

The timeline, chosen for what the stages read:
- most payments lie between 30 days and 24 hours ago, outside the risk
  stage's velocity windows: they cost the database their size (tables and
  indexes that no longer fit in memory), not their velocity reads;
- a last day within the 24-hour window, at most LAST_DAY_PER_PAYER payments
  per payer (a quarter of the 24-hour count limit, as the load test sizes its
  world): every risk batch reads that day for each of its payers, as in
  production, and no payment measured afterwards is refused for velocity
  because of it;
- nothing in the QUIET minutes before the load: the 10-minute window of the
  payments measured afterwards holds only their own.

Money guards stay on: triggers, foreign keys and checks run on every row.
The loader's own session commits asynchronously (`synchronous_commit = off`):
the database is a benchmark's, dropped afterwards; a crash loses the load,
never a committed payment of anyone else.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from paystream.bench.history_close_sql import CLOSE_INSERTS, STAGE_TOPUPS_SQL, TOPUP_INSERTS
from paystream.bench.history_sql import (
    ACCUMULATE_SQL,
    CHUNK_INSERTS,
    HOT_ACCOUNTS_SQL,
    SETUP_TABLES_SQL,
    STAGE_CHUNK_SQL,
)
from paystream.db.pool import connect
from paystream.demo_data import COUNTRIES, TYPICAL_AMOUNT_MINOR, DemoWorld, build_world
from paystream.errors import PaystreamError
from paystream.settings import Settings
from workers.risk_rules import VELOCITY_LONG_WINDOW, VELOCITY_SHORT_WINDOW

HISTORY_PAYMENTS_MAX = 50_000_000
# One INSERT ... SELECT per table per chunk: large enough that per-statement
# costs vanish, small enough that a chunk's staging table (about 0.5 GB)
# stays in the session's temporary buffers.
CHUNK_PAYMENTS_MAX = 1_000_000
HISTORY_SPAN = timedelta(days=30)
QUIET = timedelta(minutes=15)
LAST_DAY_PER_PAYER = 50
# A payer's daily top-up is its day's charges rounded up to this many typical tickets.
TOPUP_UNIT_TICKETS = 20
HISTORY_SEED = 1_204
TEMP_BUFFERS = "1GB"
# Measured on a 50,000-payment history (database size after VACUUM ANALYZE,
# minus the empty seeded database, per payment), with room for WAL and the
# indexes' growth: a load that would fill the disk is refused before it starts.
BYTES_PER_PAYMENT_ESTIMATE = 3_000
DISK_MARGIN_BYTES = 4 * 2**30

assert QUIET > VELOCITY_SHORT_WINDOW, "the measured payments' short window must see no history"

Progress = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class HistoryPlan:
    """When the history's payments happened: `payments - last_day` before the last 24 hours, the rest in them."""

    payments: int
    last_day: int
    start_at: datetime
    last_day_at: datetime
    end_at: datetime
    now: datetime

    @property
    def old(self) -> int:
        return self.payments - self.last_day

    @property
    def old_spacing_us(self) -> float:
        return (self.last_day_at - self.start_at) / timedelta(microseconds=1) / max(self.old, 1)

    @property
    def last_spacing_us(self) -> float:
        return (self.end_at - self.last_day_at) / timedelta(microseconds=1) / max(self.last_day, 1)


def plan_history(payments: int, ordinary_payers: int, now: datetime) -> HistoryPlan:
    """A 30-day span whose last day carries a 30th of the payments, at most LAST_DAY_PER_PAYER per payer."""
    assert 1 <= payments <= HISTORY_PAYMENTS_MAX, payments
    assert ordinary_payers > 0 and now.tzinfo is not None
    last_day = min(payments // HISTORY_SPAN.days, ordinary_payers * LAST_DAY_PER_PAYER)
    last_day_at = now - VELOCITY_LONG_WINDOW
    return HistoryPlan(payments, last_day, now - HISTORY_SPAN, last_day_at, now - QUIET, now)


@dataclass
class LoadReport:
    payments: int
    last_day: int
    load_s: float
    vacuum_s: float
    database_bytes: int
    # Rows inserted per table; rows updated (balances, batch closes) apart.
    rows: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)

    @property
    def rows_total(self) -> int:
        return sum(self.rows.values())


def _affected(status: str) -> int:
    """Rows of an INSERT or UPDATE from its command tag (`INSERT 0 123`, `UPDATE 45`)."""
    return int(status.rsplit(" ", 1)[-1])


def duration_text(seconds: float) -> str:
    """`1m21s`, `2h05m`: what a person reads in a progress line."""
    seconds = max(0, round(seconds))
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


async def free_bytes_near(connection: Any) -> int | None:
    """Free disk space where the server keeps its data, when that directory is on this machine."""
    try:
        directory = Path(await connection.fetchval("SHOW data_directory"))
    except asyncpg.PostgresError:  # a role that may not read it: the check is skipped, not the load
        return None
    return await asyncio.to_thread(_free_bytes, directory)


def _free_bytes(directory: Path) -> int | None:
    return shutil.disk_usage(directory).free if directory.is_dir() else None


def required_bytes(payments: int) -> int:
    return payments * BYTES_PER_PAYMENT_ESTIMATE + DISK_MARGIN_BYTES


async def load_history(
    settings: Settings,
    payments: int,
    world: DemoWorld | None = None,
    seed: int = HISTORY_SEED,
    progress: Progress = _stderr,
    now: datetime | None = None,
) -> LoadReport:
    """Load `payments` past payments into the settings' database (migrated and seeded with `world`).

    Then VACUUM ANALYZE, as an operator would after a bulk load, and report
    the times, the database's size and the rows written per table.
    """
    assert 1 <= payments <= HISTORY_PAYMENTS_MAX, payments
    world = world or build_world()
    now = now or datetime.now(UTC)
    connection = await connect(settings, migrated=True)
    try:
        free = await free_bytes_near(connection)
        if free is not None and free < required_bytes(payments):
            raise PaystreamError(
                f"a history of {payments:,} payments needs about {required_bytes(payments) / 2**30:.0f} GiB;"
                f" {free / 2**30:.0f} GiB free where PostgreSQL keeps its data"
            )
        for setting, value in (("temp_buffers", TEMP_BUFFERS), ("synchronous_commit", "off"), ("jit", "off"),
                               ("work_mem", "256MB"), ("maintenance_work_mem", "1GB")):  # fmt: skip
            await connection.execute(f"SET {setting} = '{value}'")
        ordinary = await _prepare(connection, world)
        plan = plan_history(payments, ordinary, now)
        started = time.monotonic()
        rows = await _load_chunks(connection, plan, settings, seed, progress)
        inserted, updated = await _finish(connection, progress)
        for table, count in inserted.items():
            rows[table] = rows.get(table, 0) + count
        load_s = time.monotonic() - started
        progress(f"history: {payments:,} payments loaded in {duration_text(load_s)}; VACUUM ANALYZE ...")
        vacuum_started = time.monotonic()
        await connection.execute("VACUUM ANALYZE")
        vacuum_s = time.monotonic() - vacuum_started
        size = int(await connection.fetchval("SELECT pg_database_size(current_database())"))
        progress(f"history: VACUUM ANALYZE took {duration_text(vacuum_s)}; database {size / 2**30:.2f} GiB")
    finally:
        await connection.close()
    return LoadReport(payments, plan.last_day, load_s, vacuum_s, size, rows, updated)


async def _prepare(connection: Any, world: DemoWorld) -> int:
    """Fill the small tables the chunks draw from, from the world and what the seed stored; ordinary payers."""
    await connection.execute(SETUP_TABLES_SQL)
    blocked_payers = set(world.blocked_payers)
    poor_payers = set(world.poor_payers)
    pools: dict[str, list[str]] = {"ordinary": [], "blocked": [], "poor": []}
    for payer in world.payers:
        if payer.account_id in blocked_payers:
            pools["blocked"].append(payer.account_id)
        elif payer.status != "open":
            continue
        elif payer.account_id in poor_payers:
            pools["poor"].append(payer.account_id)
        else:
            pools["ordinary"].append(payer.account_id)
    # The same pools as the generator's, as the seed stored them: open customer accounts.
    stored = {
        row["account_id"]: row
        for row in await connection.fetch(
            """SELECT a.account_id, a.currency, a.balance_minor - a.held_minor AS available, b.reason
               FROM accounts a LEFT JOIN risk_blocklist b ON b.kind = 'payer' AND b.value = a.account_id
               WHERE a.kind = 'customer' AND a.status = 'open' AND a.account_id = ANY($1::text[])""",
            [account for accounts in pools.values() for account in accounts],
        )
    }
    rows = []
    for pool, accounts in pools.items():
        present = [
            stored[a] for a in accounts if a in stored and (pool == "blocked") == (stored[a]["reason"] is not None)
        ]
        if not present:
            raise PaystreamError(f"history: no {pool} payer of the world is in the database; seed it first")
        rows += [(pool, i, r["account_id"], r["currency"], r["available"], r["reason"]) for i, r in enumerate(present)]
    await connection.executemany("INSERT INTO hist_payer VALUES ($1, $2, $3, $4, $5, $6)", rows)
    await connection.execute("INSERT INTO hist_pool SELECT pool, count(*) FROM hist_payer GROUP BY pool")
    # Merchants that take payments on the default cycle (the history's batches are its windows).
    await connection.execute(
        """INSERT INTO hist_merchant
           SELECT s.currency, row_number() OVER (PARTITION BY s.currency ORDER BY s.merchant_id) - 1, s.merchant_id,
                  s.fee_bps, s.fixed_minor, s.min_minor
           FROM merchant_fee_schedules s JOIN merchants m USING (merchant_id)
           WHERE m.status = 'active' AND m.cycle_kind IS NULL
             AND NOT EXISTS (SELECT 1 FROM risk_blocklist b WHERE b.kind = 'merchant' AND b.value = s.merchant_id)"""
    )
    currencies = sorted({row[3].strip() for row in rows})
    await connection.executemany(
        """INSERT INTO hist_currency
           SELECT $1::bpchar, $2::bigint, l.txn_amount_max_minor,
                  (SELECT count(*) FROM hist_merchant m WHERE m.currency = $1::bpchar), $3::text[], $2::bigint * $4::int
           FROM risk_limits l WHERE l.currency = $1::bpchar""",
        [(c, TYPICAL_AMOUNT_MINOR[c], list(COUNTRIES[c]), TOPUP_UNIT_TICKETS) for c in currencies],
    )
    lacking = await connection.fetchval(
        "SELECT count(*) FROM (SELECT DISTINCT currency FROM hist_payer) p"
        " LEFT JOIN hist_currency c USING (currency) WHERE coalesce(c.merchants, 0) = 0"
    )
    if lacking:
        raise PaystreamError("history: a payer currency has no risk limits or no merchant on the default cycle")
    await connection.execute(HOT_ACCOUNTS_SQL)
    return len([row for row in rows if row[0] == "ordinary"])


async def _load_chunks(
    connection: Any, plan: HistoryPlan, settings: Settings, seed: int, progress: Progress
) -> dict[str, int]:
    rows: dict[str, int] = {}
    chunks = math.ceil(plan.payments / CHUNK_PAYMENTS_MAX)
    cycle = timedelta(seconds=settings.settlement_cycle_s)
    grace = timedelta(seconds=settings.settlement_grace_s)
    started = time.monotonic()
    for index, first in enumerate(range(1, plan.payments + 1, CHUNK_PAYMENTS_MAX)):
        end = min(first + CHUNK_PAYMENTS_MAX, plan.payments + 1)
        async with connection.transaction():
            await connection.execute(
                STAGE_CHUNK_SQL, first, end, seed, plan.old, plan.start_at, plan.old_spacing_us,
                plan.last_day_at, plan.last_spacing_us, cycle, grace, plan.now,
            )  # fmt: skip
            for table, sql in CHUNK_INSERTS:
                statement_started = time.monotonic()
                written = _affected(await connection.execute(sql))
                rows[table] = rows.get(table, 0) + written
                rate = written / max(time.monotonic() - statement_started, 1e-6)
                elapsed = time.monotonic() - started
                # The ETA of the whole load, from the payments' pace so far (this chunk counted as half done).
                done = first - 1 + (end - first) / 2
                eta = elapsed / done * (plan.payments - done)
                progress(
                    f"history [{index + 1}/{chunks}] {table:<26} {rows[table]:>13,} rows  {rate:>10,.0f} rows/s"
                    f"  ETA {duration_text(eta)}"
                )
            for sql in ACCUMULATE_SQL:
                await connection.execute(sql)
    return rows


async def _finish(connection: Any, progress: Progress) -> tuple[dict[str, int], dict[str, int]]:
    """The payers' top-ups and the balances they leave; the closes of the batches whose cut-off passed.

    Returns the rows inserted and the rows updated, per table.
    """
    inserted: dict[str, int] = {}
    updated: dict[str, int] = {}
    async with connection.transaction():
        await connection.execute(STAGE_TOPUPS_SQL)
        for table, sql in (*TOPUP_INSERTS, *CLOSE_INSERTS):
            status = await connection.execute(sql)
            counts = updated if status.startswith("UPDATE") else inserted
            counts[table] = counts.get(table, 0) + _affected(status)
            verb = "updated" if status.startswith("UPDATE") else "inserted"
            progress(f"history [top-ups and closes] {table:<26} {_affected(status):>13,} rows {verb}")
    return inserted, updated
