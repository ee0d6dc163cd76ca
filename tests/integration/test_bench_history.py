"""A loaded history is one the pipeline could have written: every reconcile invariant holds on it, each table
has the rows its payments imply, and the database ceiling then runs on top of it.

50,000 payments load in seconds here; the benchmark loads millions with the same statements
(`paystream bench --history N`, docs/performance.md "Cost as the data grows").
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from paystream.bench.dbceiling_procs import run_ceiling_processes
from paystream.bench.history import HistoryOptions, HistoryResult, Measured
from paystream.bench.history_load import (
    HISTORY_SPAN,
    LAST_DAY_PER_PAYER,
    QUIET,
    LoadReport,
    load_history,
    plan_history,
)
from paystream.bench.history_report import markdown
from paystream.cli.main import main
from paystream.db.pool import connect
from paystream.demo_data import build_world
from paystream.prepare import drop_database, isolated_settings, prepare_environment
from paystream.reconcile import INVARIANTS, reconcile
from paystream.settings import Settings, load_settings
from schemas.payments import PaymentRequested
from tests.support.pipeline import CREATED_ENVIRONMENTS
from workers.cycles import batch_id
from workers.risk_rules import VELOCITY_LONG_WINDOW

pytestmark = pytest.mark.integration

HISTORY_PAYMENTS = 50_000
CEILING_PAYMENTS = 4_000


@dataclass(frozen=True)
class Loaded:
    settings: Settings
    report: LoadReport
    now: datetime
    lines: list[str]


@pytest.fixture(scope="module")
async def loaded() -> AsyncIterator[Loaded]:
    # The benchmark's settings (a one-day settlement cycle), not the tests' two-second one.
    settings = isolated_settings(load_settings(), f"hist{uuid.uuid4().hex[:8]}")
    CREATED_ENVIRONMENTS.append(settings)
    await prepare_environment(settings)
    lines: list[str] = []
    now = datetime.now(UTC)
    try:
        report = await load_history(settings, HISTORY_PAYMENTS, progress=lines.append, now=now)
        yield Loaded(settings, report, now, lines)
    finally:
        await drop_database(settings)


async def _fetch(settings: Settings, query: str, *args: Any) -> list[Any]:
    connection = await connect(settings)
    try:
        rows: list[Any] = await connection.fetch(query, *args)
        return rows
    finally:
        await connection.close()


async def _value(settings: Settings, query: str, *args: Any) -> int:
    rows = await _fetch(settings, query, *args)
    return int(rows[0][0])


async def test_every_reconcile_invariant_holds_on_a_loaded_history(loaded: Loaded) -> None:
    connection = await connect(loaded.settings)
    try:
        report = await reconcile(connection)
    finally:
        await connection.close()
    assert report.checked == [invariant.name for invariant in INVARIANTS]
    assert report.violations == []


async def test_each_table_has_the_rows_its_payments_imply(loaded: Loaded) -> None:
    settings, report = loaded.settings, loaded.report
    statuses = {
        row["status"]: row["n"]
        for row in await _fetch(settings, "SELECT status, count(*) AS n FROM payments GROUP BY status")
    }
    assert sum(statuses.values()) == HISTORY_PAYMENTS
    assert set(statuses) == {"rejected", "declined", "cleared", "settled"}
    # The generator's mix, as the history keeps it: 3% rejected by risk, 2% declined by funds.
    assert statuses["rejected"] / HISTORY_PAYMENTS == pytest.approx(0.03, abs=0.005)
    assert statuses["declined"] / HISTORY_PAYMENTS == pytest.approx(0.02, abs=0.005)
    captured = statuses["cleared"] + statuses["settled"]

    counts = {
        table: await _value(settings, f"SELECT count(*) FROM {table} WHERE {where}")
        for table, where in (
            ("risk_decisions", "true"),
            ("holds", "true"),
            ("clearings", "true"),
            ("settlement_items", "true"),
            ("settlement_batches", "true"),
            ("account_requests", "request_id LIKE 'hist-topup:%'"),
            ("account_operations", "request_id LIKE 'hist-topup:%'"),
        )
    }
    clearing_journals = await _value(settings, "SELECT count(*) FROM journals WHERE kind = 'clearing'")
    topup_journals = await _value(settings, "SELECT count(*) FROM journals WHERE request_id LIKE 'hist-topup:%'")
    payout_journals = await _value(settings, "SELECT count(*) FROM journals WHERE kind = 'payout'")
    history_entries = await _value(
        settings,
        "SELECT count(*) FROM entries e JOIN journals j USING (journal_id)"
        " WHERE j.kind IN ('clearing', 'payout') OR j.request_id LIKE 'hist-topup:%'",
    )
    payer_days = await _value(
        settings,
        "SELECT count(*) FROM (SELECT DISTINCT payer_account, (created_at AT TIME ZONE 'UTC')::date"
        " FROM payments WHERE status IN ('cleared', 'settled')) d",
    )
    item_batches = await _value(settings, "SELECT count(DISTINCT batch_id) FROM settlement_items")
    closed = await _value(settings, "SELECT count(*) FROM settlement_batches WHERE status = 'closed'")
    due = await _value(settings, "SELECT count(*) FROM settlement_batches WHERE cutoff_at <= $1", loaded.now)
    in_closed = await _value(
        settings,
        "SELECT count(*) FROM settlement_items i JOIN settlement_batches b USING (batch_id) WHERE b.status = 'closed'",
    )

    assert counts["risk_decisions"] == HISTORY_PAYMENTS
    assert counts["holds"] == captured + statuses["declined"]
    assert counts["clearings"] == counts["settlement_items"] == clearing_journals == captured
    # One top-up per payer and UTC day with a charge: request, operation, journal.
    assert counts["account_requests"] == counts["account_operations"] == topup_journals == payer_days
    # Every batch holds items; those whose cut-off passed are closed, with a payout each (no net is zero here).
    assert counts["settlement_batches"] == item_batches
    assert closed == due == payout_journals > 0
    assert in_closed == statuses["settled"]
    # Clearing: payer, merchant pending, fees; top-up: funding, payer; payout: merchant pending, payouts.
    assert history_entries == 3 * captured + 2 * topup_journals + 2 * payout_journals
    # What the loader reported is what is there.
    assert report.payments == HISTORY_PAYMENTS
    assert report.rows["payments"] == report.rows["risk_decisions"] == HISTORY_PAYMENTS
    assert report.rows["holds"] == counts["holds"]
    assert report.rows["clearings"] == report.rows["settlement_items"] == captured
    assert report.rows["journals"] == captured + topup_journals + payout_journals
    assert report.rows["entries"] == history_entries
    assert report.rows["account_requests"] == payer_days
    assert report.updated["settlement_batches"] == closed
    assert report.database_bytes > 0 and report.load_s > 0 and report.vacuum_s > 0
    # A progress line per table per chunk (one chunk here), then the top-ups and closes, then the totals.
    assert sum(1 for line in loaded.lines if line.startswith("history [1/1] ")) == 9
    assert loaded.lines[-1].startswith("history: VACUUM ANALYZE took ")


async def test_the_history_spans_thirty_days_with_a_last_day_within_the_velocity_limits(loaded: Loaded) -> None:
    settings, now = loaded.settings, loaded.now
    plan = plan_history(HISTORY_PAYMENTS, 1_942, now)
    oldest, newest = (
        await _fetch(settings, "SELECT min(created_at), max(created_at) FROM payments WHERE payment_id LIKE 'hist-%'")
    )[0]
    assert now - HISTORY_SPAN <= oldest < now - HISTORY_SPAN + timedelta(hours=1)
    # Nothing in the quiet minutes: the short velocity window of the payments measured next holds only theirs.
    assert now - QUIET - timedelta(minutes=5) < newest <= now - QUIET
    last_day = await _value(settings, "SELECT count(*) FROM payments WHERE created_at > $1", now - VELOCITY_LONG_WINDOW)
    assert last_day == loaded.report.last_day == plan.last_day == HISTORY_PAYMENTS // 30
    busiest = await _value(
        settings,
        "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM risk_decisions"
        " WHERE decision = 'approved' AND created_at > $1 GROUP BY payer_account) p",
        now - VELOCITY_LONG_WINDOW,
    )
    assert 0 < busiest <= LAST_DAY_PER_PAYER
    # A large history's last day is capped per payer: 20 million payments keep the same last day as 3 million.
    assert plan_history(20_000_000, 1_942, now).last_day == 1_942 * LAST_DAY_PER_PAYER


async def test_stored_requests_decode_as_the_stages_read_them_and_batch_ids_are_the_stages(loaded: Loaded) -> None:
    rows = await _fetch(
        loaded.settings,
        """SELECT d.request, p.payment_id, p.payer_account, p.merchant_id, p.amount_minor, p.currency, p.country,
                  p.method, p.created_at, p.metadata, i.batch_id, b.cycle_start, b.merchant_id AS batch_merchant
           FROM risk_decisions d JOIN payments p USING (payment_id)
           LEFT JOIN settlement_items i USING (payment_id) LEFT JOIN settlement_batches b ON b.batch_id = i.batch_id
           ORDER BY d.payment_id LIMIT 500""",
    )
    assert len(rows) == 500
    for row in rows:
        request = msgspec.convert(row["request"], PaymentRequested)
        assert (
            request.payment_id,
            request.payer_account,
            request.merchant_id,
            request.amount_minor,
            request.currency,
            request.country,
            request.method,
            request.created_at,
            request.metadata,
        ) == (
            row["payment_id"],
            row["payer_account"],
            row["merchant_id"],
            row["amount_minor"],
            row["currency"].strip(),
            row["country"].strip(),
            row["method"],
            row["created_at"],
            row["metadata"],
        )
        if row["batch_id"] is not None:
            assert row["batch_id"] == batch_id(row["batch_merchant"], row["currency"].strip(), row["cycle_start"])
    # Only the world's payers: the velocity reads of the payments measured later find this history.
    world = build_world()
    payers = {row["payer_account"] for row in rows}
    assert payers <= {payer.account_id for payer in world.payers}


async def test_the_database_ceiling_processes_its_payments_on_the_history(loaded: Loaded) -> None:
    # As the benchmark runs it: the stages' own database work, a process per stage.
    run = await run_ceiling_processes(loaded.settings, CEILING_PAYMENTS, seed=5)
    assert run.terminal == CEILING_PAYMENTS
    assert run.rate_per_s > 0
    statuses = {
        row["status"]: row["n"]
        for row in await _fetch(
            loaded.settings,
            "SELECT status, count(*) AS n FROM payments WHERE payment_id LIKE $1 GROUP BY status",
            f"{loaded.settings.namespace}processes5-%",
        )
    }
    assert sum(statuses.values()) == CEILING_PAYMENTS
    assert set(statuses) <= {"rejected", "declined", "cleared"}
    connection = await connect(loaded.settings)
    try:
        report = await reconcile(connection)
    finally:
        await connection.close()
    assert report.violations == []


def test_the_table_gives_both_figures_their_ratio_and_the_goal() -> None:
    load = LoadReport(20_000_000, 97_100, 1_800.0, 300.0, 50 * 2**30, {"payments": 20_000_000})
    empty = Measured("empty", ceiling_per_s=5_000.0, paystream_per_s=4_000.0, paystream_statuses={"cleared": 38_000})
    history = Measured("history", ceiling_per_s=4_500.0, paystream_per_s=3_000.0)
    result = HistoryResult(HistoryOptions(history_payments=20_000_000), empty, history, load, 40 * 2**20)
    assert result.ratios() == {"dbceiling": 0.9, "paystream": 0.75}
    table = markdown(result, "test machine")
    assert "| database ceiling (a process per stage) | 5,000/s | 4,500/s | 0.90 | met |" in table
    assert "| paystream (four worker processes) | 4,000/s | 3,000/s | 0.75 | not met |" in table
    assert "loaded in 30m00s (11,111 payments/s, 20,000,000 rows), VACUUM ANALYZE 5m00s" in table
    assert "database 50.00 GiB (empty: 40 MiB)" in table
    assert "- paystream: empty cleared 38,000; history none" in table


def test_history_size_is_validated(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["bench", "--history", "50000001"])
    assert exited.value.code == 2
    assert "must be a whole number from 1,000 to 50,000,000, got '50000001'" in capsys.readouterr().err
