"""Settlement on each merchant's own cycle, on the real PostgreSQL (and the real pipeline for the last test).

The stages' `apply` is driven directly with payments at chosen event times:
a daily cycle at 18:00 Europe/Berlin over both summer-time changes (a 23-hour
and a 25-hour batch), and a cycle changed twice while a batch is open (the
open batch keeps its bounds, the new cycle starts where the newest batch
ends, a late payment goes to the next batch, no two batches overlap).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import asyncpg
import pytest

from paystream.db.migrate import available_migrations
from paystream.db.pool import connect
from paystream.errors import ConcurrentChangeError
from paystream.merchants import MerchantChange, add, update
from paystream.merchants.model import FeeSchedule, merchant_spec, parse_cycle
from paystream.prepare import create_database, drop_database, isolated_settings
from paystream.settings import Settings, load_settings
from paystream.stage.contract import StageResult
from schemas.payments import FundsHeld, PaymentCleared, PaymentRequested, RiskAssessed
from tests.support.pipeline import drain, fresh_environment, wait_terminal
from tests.support.stages import accepted, payment, publish_requests, wait_until_blocked
from workers.clearing import ClearingStage
from workers.funds import FundsStage
from workers.risk import RiskStage
from workers.settlement import SettlementStage
from workers.settlement_close import close_due_batches

pytestmark = pytest.mark.integration

GRACE = timedelta(minutes=5)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.fixture(scope="module")
async def environment() -> AsyncIterator[Settings]:
    settings = await fresh_environment("cycles")
    yield settings.with_overrides(settlement_grace_s=int(GRACE.total_seconds()))
    await drop_database(settings)


async def _apply(settings: Settings, stage: Any, records: Sequence[Any], now: datetime) -> StageResult:
    connection = await connect(settings)
    try:
        async with connection.transaction():
            result: StageResult = await stage.apply(connection, records, now)
            return result
    finally:
        await connection.close()


async def _cleared(settings: Settings, requests: Sequence[PaymentRequested]) -> list[PaymentCleared]:
    """Risk, funds and clearing applied and committed: the payments.cleared events."""
    now = max(r.created_at for r in requests)
    risk = await _apply(settings, RiskStage(settings), [accepted(r) for r in requests], now)
    assert all(isinstance(o.event, RiskAssessed) for o in risk.outputs), risk
    funds = await _apply(settings, FundsStage(), [accepted(o.event) for o in risk.outputs], now)
    assert all(isinstance(o.event, FundsHeld) for o in funds.outputs), funds
    clearing = await _apply(settings, ClearingStage(), [accepted(o.event) for o in funds.outputs], now)
    cleared = [o.event for o in clearing.outputs if isinstance(o.event, PaymentCleared)]
    assert len(cleared) == len(requests), clearing
    return cleared


async def _settle(settings: Settings, requests: Sequence[PaymentRequested]) -> None:
    cleared = await _cleared(settings, requests)
    result = await _apply(settings, SettlementStage(settings), [accepted(c) for c in cleared], datetime.now(UTC))
    assert result.refused == [] and result.outputs == []


async def _add(settings: Settings, merchant_id: str, cycle: str) -> None:
    connection = await connect(settings)
    try:
        await add(
            connection, merchant_spec(merchant_id, merchant_id, [FeeSchedule("EUR", 100, 0, 0)], parse_cycle(cycle))
        )
    finally:
        await connection.close()


async def _batches(settings: Settings, merchant_id: str) -> list[tuple[datetime, datetime, datetime, str, list[str]]]:
    """(start, end, cut-off, status, payment ids) of the merchant's batches, in time order."""
    connection = await connect(settings)
    try:
        rows = await connection.fetch(
            """SELECT b.cycle_start, b.cycle_end, b.cutoff_at, b.status,
                      array_agg(i.payment_id ORDER BY i.payment_id) FILTER (WHERE i.payment_id IS NOT NULL) AS items
               FROM settlement_batches b LEFT JOIN settlement_items i USING (batch_id)
               WHERE b.merchant_id = $1 GROUP BY b.batch_id ORDER BY b.cycle_start""",
            merchant_id,
        )
    finally:
        await connection.close()
    return [(r["cycle_start"], r["cycle_end"], r["cutoff_at"], r["status"], list(r["items"] or [])) for r in rows]


async def test_a_daily_berlin_cycle_over_both_summer_time_changes(environment: Settings) -> None:
    await _add(environment, "berlin-1", "daily 18:00 Europe/Berlin")
    at = {
        "dst-a": utc(2026, 3, 28, 16, 59, 59),  # 17:59:59 CET: the cycle ending at Saturday's cut-off
        "dst-b": utc(2026, 3, 28, 17),  # 18:00 CET: the next one, over the change to summer time
        "dst-c": utc(2026, 3, 29, 15, 59, 59),  # 17:59:59 CEST: still that one
        "dst-d": utc(2026, 3, 29, 16),  # 18:00 CEST
        "dst-e": utc(2026, 10, 25, 12),  # over the change back to winter time
    }
    # One input batch for all of them: several new batches of one merchant at once.
    await _settle(environment, [payment(p, merchant="berlin-1", created_at=t) for p, t in at.items()])
    batches = await _batches(environment, "berlin-1")
    assert [(b[0], b[1], b[4]) for b in batches] == [
        (utc(2026, 3, 27, 17), utc(2026, 3, 28, 17), ["dst-a"]),
        (utc(2026, 3, 28, 17), utc(2026, 3, 29, 16), ["dst-b", "dst-c"]),
        (utc(2026, 3, 29, 16), utc(2026, 3, 30, 16), ["dst-d"]),
        (utc(2026, 10, 24, 16), utc(2026, 10, 25, 17), ["dst-e"]),
    ]
    assert [b[1] - b[0] for b in batches] == [timedelta(hours=h) for h in (24, 23, 24, 25)]
    assert all(b[2] == b[1] + GRACE and b[3] == "open" for b in batches)


async def test_a_cycle_changed_while_a_batch_is_open(environment: Settings) -> None:
    day = utc(2026, 1, 5)
    await _add(environment, "change-1", "seconds 3600")
    await _settle(
        environment, [payment("chg-1", merchant="change-1", created_at=day + timedelta(hours=10, minutes=20))]
    )

    connection = await connect(environment)
    try:
        await update(connection, "change-1", MerchantChange(cycle=parse_cycle("seconds 600")))
    finally:
        await connection.close()
    await _settle(
        environment,
        [
            payment("chg-2", merchant="change-1", created_at=day + timedelta(hours=10, minutes=45)),
            payment("chg-3", merchant="change-1", created_at=day + timedelta(hours=11, minutes=5)),
        ],
    )
    connection = await connect(environment)
    try:
        await update(connection, "change-1", MerchantChange(cycle=parse_cycle("daily 00:00 UTC")))
    finally:
        await connection.close()
    await _settle(
        environment, [payment("chg-4", merchant="change-1", created_at=day + timedelta(hours=11, minutes=30))]
    )

    ten, eleven = day + timedelta(hours=10), day + timedelta(hours=11)
    assert [(b[0], b[1], b[4]) for b in await _batches(environment, "change-1")] == [
        # Opened on the hourly cycle; the 10:45 payment still goes here after the change to 10 minutes.
        (ten, eleven, ["chg-1", "chg-2"]),
        # The 10-minute cycle from where the open batch ends.
        (eleven, eleven + timedelta(minutes=10), ["chg-3"]),
        # The daily cycle (midnight to midnight UTC), from where the newest batch ends.
        (eleven + timedelta(minutes=10), day + timedelta(days=1), ["chg-4"]),
    ]

    # The hour-long batch reaches its cut-off and closes; a payment of 10:50 arriving later is late.
    connection = await connect(environment)
    try:
        closed = await close_due_batches(connection, eleven + GRACE)
        assert closed == ["change-1:EUR:20260105T100000Z"]
    finally:
        await connection.close()
    await _settle(environment, [payment("chg-5", merchant="change-1", created_at=ten + timedelta(minutes=50))])
    batches = await _batches(environment, "change-1")
    assert [(b[0], b[3], b[4]) for b in batches] == [
        (ten, "closed", ["chg-1", "chg-2"]),
        (eleven, "open", ["chg-3", "chg-5"]),  # the next batch after the closed one
        (eleven + timedelta(minutes=10), "open", ["chg-4"]),
    ]
    assert all(earlier[1] <= later[0] for earlier, later in pairwise(batches))


async def test_a_batch_opened_concurrently_under_another_cycle_is_a_conflict_then_retried(
    environment: Settings,
) -> None:
    """Two transactions open batches of one merchant under two cycles: the later waits, fails, and its retry joins."""
    noon = utc(2026, 2, 1, 12)
    await _add(environment, "race-1", "seconds 3600")
    first, second = await _cleared(
        environment,
        [
            payment("race-c1", merchant="race-1", created_at=noon + timedelta(minutes=20)),
            payment("race-c2", merchant="race-1", created_at=noon + timedelta(minutes=25)),
        ],
    )
    stage = SettlementStage(environment)
    one, two, observer = await connect(environment), await connect(environment), await connect(environment)
    try:
        tx_one = one.transaction()
        await tx_one.start()
        await stage.apply(one, [accepted(first)], noon)  # opens 12:00-13:00, not committed yet
        await update(observer, "race-1", MerchantChange(cycle=parse_cycle("seconds 600")))
        tx_two = two.transaction()
        await tx_two.start()
        # Sees no batch yet, so opens 12:20-12:30 under the new cycle: it overlaps and must wait.
        opening = asyncio.create_task(stage.apply(two, [accepted(second)], noon))
        await wait_until_blocked(observer, two.get_server_pid())
        await tx_one.commit()
        with pytest.raises(ConcurrentChangeError, match="a batch was opened concurrently"):
            await opening
        await tx_two.rollback()
    finally:
        for connection in (one, two, observer):
            await connection.close()
    await _apply(environment, stage, [accepted(second)], noon)  # the loop's retry
    assert [(b[0], b[1], b[4]) for b in await _batches(environment, "race-1")] == [
        (noon, noon + timedelta(hours=1), ["race-c1", "race-c2"])
    ]


async def test_the_database_refuses_overlapping_batches(environment: Settings) -> None:
    connection = await connect(environment)
    try:
        with pytest.raises(asyncpg.ExclusionViolationError, match="settlement_batches_no_overlap"):
            await connection.execute(
                """INSERT INTO settlement_batches (batch_id, merchant_id, currency, cycle_start, cycle_end, cutoff_at,
                                                   status, opened_at)
                   VALUES ('overlap', 'change-1', 'EUR', '2026-01-05 11:05Z', '2026-01-05 11:15Z', now(), 'open',
                           now())"""
            )
        # Another currency, or a batch that touches without overlapping, is fine.
        await connection.execute(
            """INSERT INTO settlement_batches (batch_id, merchant_id, currency, cycle_start, cycle_end, cutoff_at,
                                               status, opened_at)
               VALUES ('other-currency', 'change-1', 'USD', '2026-01-05 11:05Z', '2026-01-05 11:15Z', now(), 'open',
                       now()),
                      ('touching', 'change-1', 'EUR', '2026-01-05 09:00Z', '2026-01-05 10:00Z', now(), 'open', now())"""
        )
    finally:
        await connection.close()


async def test_migration_004_marks_overlapping_batches_of_an_old_database_instead_of_failing() -> None:
    """Batches written under two global cycle settings overlap; the guard leaves them out and holds for new ones."""
    settings = isolated_settings(load_settings(), f"cyclemig{uuid.uuid4().hex[:8]}")
    assert await create_database(settings)
    try:
        connection = await asyncpg.connect(settings.database_url)
        try:
            for migration in available_migrations():
                if migration.version == 4:
                    await connection.execute(
                        """INSERT INTO settlement_batches (batch_id, merchant_id, currency, cycle_start, cycle_end,
                                                           cutoff_at, status, opened_at)
                           VALUES ('day', 'm', 'EUR', '2026-01-01', '2026-01-02', '2026-01-02', 'closed', now()),
                                  ('ten-min', 'm', 'EUR', '2026-01-01 10:00', '2026-01-01 10:10', now(), 'open', now()),
                                  ('next-day', 'm', 'EUR', '2026-01-02', '2026-01-03', now(), 'open', now()),
                                  ('usd', 'm', 'USD', '2026-01-01 10:00', '2026-01-01 10:10', now(), 'open', now())"""
                    )
                if migration.version <= 4:
                    await connection.execute(migration.sql)
            flags = await connection.fetch("SELECT batch_id, legacy_overlap FROM settlement_batches ORDER BY batch_id")
            with pytest.raises(asyncpg.ExclusionViolationError):
                await connection.execute(
                    """INSERT INTO settlement_batches (batch_id, merchant_id, currency, cycle_start, cycle_end,
                                                       cutoff_at, status, opened_at)
                       VALUES ('new', 'm', 'EUR', '2026-01-02 12:00', '2026-01-02 13:00', now(), 'open', now())"""
                )
        finally:
            await connection.close()
    finally:
        await drop_database(settings)
    assert [(r["batch_id"], r["legacy_overlap"]) for r in flags] == [
        ("day", False),
        ("next-day", False),
        ("ten-min", True),
        ("usd", False),
    ]


async def test_merchants_on_different_cycles_settle_through_the_pipeline() -> None:
    settings = await fresh_environment("cyclepipe")
    try:
        await _add(settings, "every-3s", "seconds 3")
        await _add(settings, "every-5s", "seconds 5")
        requests = [
            payment(f"pipe-{merchant}-{n}", payer=f"payer-{4 * n:06d}", merchant=merchant)
            for merchant in ("every-3s", "every-5s")
            for n in range(1, 6)
        ]
        await publish_requests(settings, requests)
        # Idle long enough for a 5-second cycle's cut-off (its end + 1 s of grace) to pass.
        await drain(settings, idle_exit_ms=10_000)
        statuses = await wait_terminal(settings, [r.payment_id for r in requests], timeout_s=60)
        assert set(statuses.values()) == {"settled"}
        connection = await connect(settings)
        try:
            rows = await connection.fetch(
                """SELECT merchant_id, cycle_start, cycle_end, item_count FROM settlement_batches
                   WHERE merchant_id LIKE 'every-%'"""
            )
        finally:
            await connection.close()
    finally:
        await drop_database(settings)
    cycle_s = {"every-3s": 3, "every-5s": 5}
    lengths: dict[str, set[float]] = {}
    for r in rows:
        lengths.setdefault(r["merchant_id"], set()).add((r["cycle_end"] - r["cycle_start"]).total_seconds())
        # Aligned to the Unix epoch: whole multiples of the merchant's own cycle.
        assert r["cycle_start"].timestamp() % cycle_s[r["merchant_id"]] == 0, r
    assert lengths == {"every-3s": {3.0}, "every-5s": {5.0}}
    assert sum(r["item_count"] for r in rows) == len(requests)
