"""Settlement's timer work is bounded by items, and its lookups do not grow with history.

The pipeline runs with a one-day cycle, so no batch closes by itself; the test
then calls the close and publish steps directly with a `now` past the cut-off
and small bounds, the way a daily cut-off meets a large backlog.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from paystream.db.pool import connect
from paystream.prepare import drop_database
from paystream.reconcile import reconcile
from paystream.settings import Settings
from schemas.codec import encode
from tests.support.pipeline import drain, fast_settings, fresh_environment, generate, publish, wait_terminal
from workers.settlement import NEARBY_BATCHES_SQL
from workers.settlement_close import advance_cursors, close_due_batches, next_chunk

pytestmark = pytest.mark.integration

PAYMENTS = 150


@pytest.fixture(scope="module")
async def cleared() -> AsyncIterator[Settings]:
    """Payments cleared and in open batches of a one-day cycle: nothing closes until the test says so."""
    settings = await fresh_environment(
        "bound", fast_settings().with_overrides(settlement_cycle_s=86_400, settlement_grace_s=300)
    )
    await publish(settings, generate(PAYMENTS, settings.namespace.rstrip("."), seed=17))
    await drain(settings, idle_exit_ms=3_000)
    yield settings
    await drop_database(settings)


async def test_a_cut_off_closes_batches_within_the_item_bound_tick_by_tick(cleared: Settings) -> None:
    later = datetime.now(UTC) + timedelta(days=3)
    connection = await connect(cleared)
    try:
        sizes = {
            r["batch_id"]: r["n"]
            for r in await connection.fetch(
                """SELECT b.batch_id, count(i.payment_id) AS n FROM settlement_batches b
                   LEFT JOIN settlement_items i USING (batch_id) WHERE b.status = 'open'
                   GROUP BY b.batch_id"""
            )
        }
        assert len(sizes) >= 4, sizes
        bound = max(sizes.values()) + 1
        rounds = []
        while True:
            closed = await close_due_batches(connection, later, items_max=bound)
            if not closed:
                break
            rounds.append(closed)
            # Each transaction stays within the bound, unless one batch alone is larger (then it closes alone).
            assert sum(sizes[b] for b in closed) <= bound or len(closed) == 1
        still_open = await connection.fetchval("SELECT count(*) FROM settlement_batches WHERE status = 'open'")
    finally:
        await connection.close()
    assert len(rounds) >= 2
    assert sorted(b for r in rounds for b in r) == sorted(sizes)
    assert still_open == 0


async def test_closed_batches_are_published_in_bounded_chunks_that_replay_identically(cleared: Settings) -> None:
    connection = await connect(cleared)
    try:
        await close_due_batches(connection, datetime.now(UTC) + timedelta(days=3))
        items = await connection.fetchval(
            """SELECT count(*) FROM settlement_items i JOIN settlement_batches b USING (batch_id)
               WHERE b.status = 'closed' AND b.published_at IS NULL"""
        )
        batches = await connection.fetchval(
            "SELECT count(*) FROM settlement_batches WHERE status = 'closed' AND published_at IS NULL"
        )
        published_ids: list[str] = []
        closed_events: list[str] = []
        more_flags: list[bool] = []
        chunks = 0
        while True:
            chunk = await next_chunk(connection, datetime.now(UTC), items_max=7)
            if chunk is None:
                break
            # A crash before the cursor moved sends the same chunk again, byte for byte.
            again = await next_chunk(connection, datetime.now(UTC) + timedelta(minutes=5), items_max=7)
            assert again is not None
            assert [encode(o.event) for o in again.outputs] == [encode(o.event) for o in chunk.outputs]
            settled = [o for o in chunk.outputs if o.topic == "payments.outcomes"]
            closed_events.extend(o.key for o in chunk.outputs if o.topic == "settlements.closed")
            assert len(settled) <= 7
            published_ids.extend(o.key for o in settled)
            # What was published is settled before it was sent.
            statuses = await connection.fetch(
                "SELECT DISTINCT status FROM payments WHERE payment_id = ANY($1::text[])", [o.key for o in settled]
            )
            assert [r["status"] for r in statuses] in ([], ["settled"])
            await advance_cursors(connection, chunk)
            more_flags.append(chunk.more)
            chunks += 1
        report = await reconcile(connection)
    finally:
        await connection.close()
    assert len(published_ids) == items
    assert len(set(published_ids)) == items
    assert chunks >= -(-items // 7)
    assert len(closed_events) == batches  # one batch_closed per batch, with its first chunk
    # Every chunk but the last says more is due now (the loop then ticks again after its next batch).
    assert more_flags == [True] * (chunks - 1) + [False]
    assert report.ok, [str(v) for v in report.violations]
    statuses = await wait_terminal(cleared, published_ids, timeout_s=30)
    assert set(statuses.values()) == {"settled"}


async def test_the_nearby_batches_lookup_reads_a_bounded_number_of_rows(cleared: Settings) -> None:
    """A merchant with a long history of closed batches: the lookup probes the index, newest first.

    The newest closed batch, the one at or before the items' earliest time, those up to the latest and
    the next one: a handful of rows whatever the history (3,000 days here).
    """
    connection = await connect(cleared)
    try:
        await connection.execute(
            """INSERT INTO settlement_batches (batch_id, merchant_id, currency, cycle_start, cycle_end, cutoff_at,
                                               status, item_count, gross_minor, fee_minor, net_minor, opened_at,
                                               closed_at, published_at)
               SELECT 'hist-' || g, 'merchant-history', 'EUR', t, t + interval '1 day', t + interval '1 day',
                      'closed', 0, 0, 0, 0, t, t, t
               FROM generate_series(1, 3000) AS g,
                    LATERAL (SELECT timestamptz '2020-01-01' + g * interval '1 day' AS t) s"""
        )
        await connection.execute("ANALYZE settlement_batches")
        # Items of yesterday's cycle in the history: late, so they go after the newest closed batch.
        newest_end = await connection.fetchval(
            "SELECT max(cycle_end) FROM settlement_batches WHERE merchant_id = 'merchant-history'"
        )
        at = newest_end - timedelta(hours=12)
        plan = await connection.fetchval(
            f"EXPLAIN (ANALYZE, FORMAT JSON) {NEARBY_BATCHES_SQL}", ["merchant-history"], ["EUR"], [at], [at]
        )
        rows = await connection.fetch(NEARBY_BATCHES_SQL, ["merchant-history"], ["EUR"], [at], [at])
    finally:
        await connection.close()
    parsed = json.loads(plan) if isinstance(plan, str) else plan
    rows_read = _rows_read_from(parsed[0]["Plan"], "settlement_batches")
    assert rows_read <= 8, plan
    # The newest closed batch's end, and that batch as the one at or before the (late) time.
    assert [(r["closed_end"], r["cycle_end"]) for r in rows] == [(newest_end, newest_end)]


def _rows_read_from(node: dict[str, object], relation: str) -> int:
    own = 0
    if node.get("Relation Name") == relation:
        own = int(node.get("Actual Rows", 0)) + int(node.get("Rows Removed by Filter", 0))  # type: ignore[call-overload]
    children = node.get("Plans", [])
    assert isinstance(children, list)
    return own + sum(_rows_read_from(child, relation) for child in children)
