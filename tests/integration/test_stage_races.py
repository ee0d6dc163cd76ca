"""Two transactions of one stage at once, interleaved step by step on the real PostgreSQL.

Each test holds the first transaction open with its locks, lets the second
run until PostgreSQL makes it wait (seen in pg_stat_activity), then commits
the first. That is what a retry racing its own unacknowledged commit does
(the connection dropped during COMMIT), and what two consumers deciding one
payment id do when upstream sent it for two payers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from paystream.db.pool import connect
from paystream.errors import ConcurrentChangeError
from paystream.prepare import drop_database
from paystream.reconcile import reconcile
from paystream.settings import Settings
from paystream.stage.contract import Output, StageResult
from schemas.codec import encode
from schemas.payments import FundsHeld, PaymentRequested, RiskAssessed
from tests.support.pipeline import fresh_environment
from tests.support.stages import accepted, payment, race, wait_until_blocked
from workers.clearing import ClearingStage
from workers.funds import FundsStage
from workers.risk import RiskStage, _load_context
from workers.settlement import SettlementStage
from workers.settlement_close import close_due_batches

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
BALANCE_SQL = "SELECT balance_minor FROM accounts WHERE account_id = 'payer-000000'"


@pytest.fixture(scope="module")
async def environment() -> AsyncIterator[Settings]:
    settings = await fresh_environment("race")
    yield settings
    await drop_database(settings)


def _bytes(outputs: Sequence[Output]) -> list[tuple[str, str, bytes]]:
    return [(o.topic, o.key, encode(o.event)) for o in outputs]


async def _apply(settings: Settings, stage: Any, records: Sequence[Any]) -> StageResult:
    connection = await connect(settings)
    try:
        async with connection.transaction():
            result: StageResult = await stage.apply(connection, records, T0)
            return result
    finally:
        await connection.close()


async def _held(settings: Settings, request: PaymentRequested) -> FundsHeld:
    """Risk and funds applied and committed for `request`: its funds.held event."""
    risk = await _apply(settings, RiskStage(settings), [accepted(request)])
    assessed = risk.outputs[0].event
    assert isinstance(assessed, RiskAssessed), risk
    funds = await _apply(settings, FundsStage(), [accepted(assessed)])
    held = funds.outputs[0].event
    assert isinstance(held, FundsHeld), funds
    return held


async def test_one_payment_id_for_two_payers_ends_with_one_decision(environment: Settings) -> None:
    stage = RiskStage(environment)
    for_a = payment("race-two-payers", payer="payer-000000", created_at=T0)
    for_b = payment("race-two-payers", payer="payer-000004", created_at=T0)

    first, second = await race(environment, stage, [accepted(for_a)], [accepted(for_b, partition=1)], T0)

    assert [type(o.event).__name__ for o in first.outputs] == ["RiskAssessed"]
    assert second.outputs == []
    assert [(r.field, r.rule) for r in second.refused] == [("payment_id", "idempotency_conflict")]
    connection = await connect(environment)
    try:
        stored = await connection.fetch(
            "SELECT payer_account FROM risk_decisions WHERE payment_id = 'race-two-payers'"
            " UNION ALL SELECT payer_account FROM payments WHERE payment_id = 'race-two-payers'"
        )
    finally:
        await connection.close()
    assert [r["payer_account"] for r in stored] == ["payer-000000", "payer-000000"]


async def test_a_risk_retry_racing_its_first_commit_returns_the_stored_decision(environment: Settings) -> None:
    request = payment("race-risk-retry", created_at=T0)
    first, second = await race(environment, RiskStage(environment), [accepted(request)], [accepted(request)], T0)
    assert second.refused == []
    assert _bytes(second.outputs) == _bytes(first.outputs)


async def test_a_funds_retry_racing_its_first_commit_returns_the_same_hold(environment: Settings) -> None:
    request = payment("race-funds-retry", created_at=T0)
    risk = await _apply(environment, RiskStage(environment), [accepted(request)])
    record = accepted(risk.outputs[0].event)

    first, second = await race(environment, FundsStage(), [record], [record], T0)

    assert not isinstance(second, BaseException), second
    assert second.refused == []
    assert [type(o.event).__name__ for o in first.outputs] == ["FundsHeld"]
    assert _bytes(second.outputs) == _bytes(first.outputs)


async def test_a_clearing_retry_racing_its_first_commit_returns_the_same_clearing(environment: Settings) -> None:
    held = await _held(environment, payment("race-clearing-retry", created_at=T0))
    record = accepted(held)

    first, second = await race(environment, ClearingStage(), [record], [record], T0)

    assert not isinstance(second, BaseException), second
    assert second.refused == []
    assert [type(o.event).__name__ for o in first.outputs] == ["PaymentCleared", "PaymentOutcome"]
    assert _bytes(second.outputs) == _bytes(first.outputs)


async def test_the_merchant_daily_limit_holds_under_two_risk_consumers(environment: Settings) -> None:
    connection = await connect(environment)
    try:
        limit = await connection.fetchval(
            "SELECT merchant_daily_amount_max_minor FROM risk_limits WHERE currency = 'EUR'"
        )
        await connection.execute(
            "INSERT INTO merchants (merchant_id, name) VALUES ('merchant-race', 'Race') ON CONFLICT DO NOTHING"
        )
        await connection.execute(
            """INSERT INTO merchant_fee_schedules (merchant_id, currency, fee_bps, fixed_minor, min_minor)
               VALUES ('merchant-race', 'EUR', 100, 0, 0) ON CONFLICT DO NOTHING"""
        )
        # Pre-fill the day so that either payment fits alone but not both.
        day_start = T0 - timedelta(hours=1)
        await connection.execute(
            """INSERT INTO risk_merchant_day_totals (merchant_id, currency, day, approved_minor)
               VALUES ('merchant-race', 'EUR', $1, $2)""",
            day_start.date(),
            limit - 15_000,
        )
    finally:
        await connection.close()
    stage = RiskStage(environment)
    one = payment("race-limit-1", payer="payer-000000", merchant="merchant-race", amount_minor=10_000, created_at=T0)
    two = payment("race-limit-2", payer="payer-000004", merchant="merchant-race", amount_minor=10_000, created_at=T0)

    first, second = await race(environment, stage, [accepted(one)], [accepted(two, partition=1)], T0)

    assert [type(o.event).__name__ for o in first.outputs] == ["RiskAssessed"]
    assert isinstance(second, ConcurrentChangeError), second
    # The retry reads the new total and rejects the second payment.
    retried = await _apply(environment, stage, [accepted(two, partition=1)])
    assert [o.event.status for o in retried.outputs] == ["rejected"]  # type: ignore[attr-defined]
    assert any("merchant" in r for r in retried.outputs[0].event.reasons)  # type: ignore[attr-defined]
    connection = await connect(environment)
    try:
        total = await connection.fetchval(
            "SELECT approved_minor FROM risk_merchant_day_totals WHERE merchant_id = 'merchant-race'"
        )
    finally:
        await connection.close()
    assert total == limit - 5_000


async def test_events_that_disagree_with_what_was_stored_are_refused(environment: Settings) -> None:
    request = payment("race-forged", created_at=T0)
    held = await _held(environment, request)
    forged_payment = PaymentRequested(**{**_fields(request), "amount_minor": request.amount_minor * 10})

    forged_assessed = RiskAssessed(
        event_id="race-forged:risk", decision="approved", reasons=[], assessed_at=T0, payment=forged_payment
    )
    funds = await _apply(environment, FundsStage(), [accepted(forged_assessed)])
    assert funds.outputs == []
    assert [(r.rule) for r in funds.refused] == ["idempotency_conflict"]

    never_approved = RiskAssessed(
        event_id="race-ghost:risk",
        decision="approved",
        reasons=[],
        assessed_at=T0,
        payment=payment("race-ghost", created_at=T0),
    )
    funds = await _apply(environment, FundsStage(), [accepted(never_approved)])
    assert [(r.rule) for r in funds.refused] == ["not_approved"]

    forged_held = FundsHeld(event_id=held.event_id, hold_id=held.hold_id, held_at=T0, payment=forged_payment)
    clearing = await _apply(environment, ClearingStage(), [accepted(forged_held)])
    assert clearing.outputs == []
    assert [(r.rule) for r in clearing.refused] == ["idempotency_conflict"]

    connection = await connect(environment)
    try:
        hold = await connection.fetchrow("SELECT status, amount_minor FROM holds WHERE payment_id = 'race-forged'")
        ghost = await connection.fetchval("SELECT count(*) FROM holds WHERE payment_id = 'race-ghost'")
    finally:
        await connection.close()
    assert (hold["status"], hold["amount_minor"]) == ("held", request.amount_minor)
    assert ghost == 0

    # The real event still clears, from the stored hold.
    clearing = await _apply(environment, ClearingStage(), [accepted(held)])
    assert [o.event.gross_minor for o in clearing.outputs[:1]] == [request.amount_minor]  # type: ignore[attr-defined]


async def test_a_payment_whose_fee_schedule_vanished_ends_failed_and_its_hold_released(
    environment: Settings,
) -> None:
    connection = await connect(environment)
    try:
        await connection.execute(
            "INSERT INTO merchants (merchant_id, name) VALUES ('merchant-gone', 'Gone') ON CONFLICT DO NOTHING"
        )
        await connection.execute(
            """INSERT INTO merchant_fee_schedules (merchant_id, currency, fee_bps, fixed_minor, min_minor)
               VALUES ('merchant-gone', 'EUR', 100, 0, 0) ON CONFLICT DO NOTHING"""
        )
        held_before = await connection.fetchval("SELECT held_minor FROM accounts WHERE account_id = 'payer-000000'")
        held = await _held(environment, payment("race-no-fees", merchant="merchant-gone", created_at=T0))
        await connection.execute("DELETE FROM merchant_fee_schedules WHERE merchant_id = 'merchant-gone'")

        first = await _apply(environment, ClearingStage(), [accepted(held)])
        replayed = await _apply(environment, ClearingStage(), [accepted(held)])

        hold = await connection.fetchval("SELECT status FROM holds WHERE payment_id = 'race-no-fees'")
        row = await connection.fetchrow(
            "SELECT status, failure_reasons FROM payments WHERE payment_id = 'race-no-fees'"
        )
        held_after = await connection.fetchval("SELECT held_minor FROM accounts WHERE account_id = 'payer-000000'")
    finally:
        await connection.close()
    assert [(o.event.status, o.event.stage) for o in first.outputs] == [("failed", "clearing")]  # type: ignore[attr-defined]
    assert first.refused == []
    assert _bytes(replayed.outputs) == _bytes(first.outputs)
    assert hold == "released"
    assert row["status"] == "failed"
    assert row["failure_reasons"][0].startswith("no_fee_schedule")
    assert held_after == held_before


def _fields(request: PaymentRequested) -> dict[str, Any]:
    return {f: getattr(request, f) for f in request.__struct_fields__}


async def test_one_back_dated_payment_does_not_widen_other_payers_history_reads(environment: Settings) -> None:
    connection = await connect(environment)
    try:
        # payer-000008 has an approval 30 hours before its payment: outside its own 24-hour window.
        await connection.execute(
            """INSERT INTO risk_decisions (payment_id, payer_account, merchant_id, amount_minor, currency,
                                           created_at, decision, reasons, assessed_at, request)
               VALUES ('history-old', 'payer-000008', 'merchant-000', 100, 'EUR', $1, 'approved', '{}', $1, '{}')""",
            T0 - timedelta(hours=30),
        )
        back_dated = payment("history-a", payer="payer-000000", created_at=T0 - timedelta(hours=20))
        current = payment("history-b", payer="payer-000008", created_at=T0)
        context = await _load_context(connection, [back_dated, current])
    finally:
        await connection.close()
    assert context.payer_history.get("payer-000008", []) == []


async def test_clearing_never_debits_without_an_open_hold(environment: Settings) -> None:
    """A funds.held whose hold was released (its payment failed) is refused, and no money moves."""
    held = await _held(environment, payment("race-released", created_at=T0))
    connection = await connect(environment)
    try:
        # What clearing finds after the payment failed elsewhere: hold released, amount given back.
        await connection.execute(
            "UPDATE holds SET status = 'released', released_minor = amount_minor WHERE payment_id = 'race-released'"
        )
        await connection.execute(
            "UPDATE accounts SET held_minor = held_minor - $1 WHERE account_id = 'payer-000000'",
            held.payment.amount_minor,
        )
        await connection.execute("UPDATE payments SET status = 'failed' WHERE payment_id = 'race-released'")
        balance_before = await connection.fetchval(
            "SELECT balance_minor FROM accounts WHERE account_id = 'payer-000000'"
        )
        result = await _apply(environment, ClearingStage(), [accepted(held)])
        balance_after = await connection.fetchval(
            "SELECT balance_minor FROM accounts WHERE account_id = 'payer-000000'"
        )
        journals = await connection.fetchval("SELECT count(*) FROM journals WHERE payment_id = 'race-released'")
    finally:
        await connection.close()
    assert [(r.field, r.rule) for r in result.refused] == []
    assert [(o.event.status) for o in result.outputs] == ["failed"]  # type: ignore[attr-defined]
    assert (balance_after, journals) == (balance_before, 0)

    never_held = FundsHeld(
        event_id="race-unheld:funds",
        hold_id="hold:race-unheld",
        held_at=T0,
        payment=payment("race-unheld", created_at=T0),
    )
    result = await _apply(environment, ClearingStage(), [accepted(never_held)])
    assert result.outputs == []
    assert [(r.field, r.rule) for r in result.refused] == [("hold_id", "hold_not_open")]


async def test_items_for_a_batch_that_closes_meanwhile_are_retried_into_the_next_batch(environment: Settings) -> None:
    settings = environment.with_overrides(settlement_cycle_s=3_600, settlement_grace_s=0)
    stage = SettlementStage(settings)
    first_item = await _cleared(settings, payment("race-batch-1", created_at=T0))
    second_item = await _cleared(settings, payment("race-batch-2", created_at=T0 + timedelta(seconds=1)))
    await _apply(settings, stage, [accepted(first_item)])

    closer, adder, observer = await connect(settings), await connect(settings), await connect(settings)
    try:
        closing = closer.transaction()
        await closing.start()
        closed = await close_due_batches(closer, T0 + timedelta(hours=2))
        assert len(closed) >= 1
        adding = adder.transaction()
        await adding.start()
        task = asyncio.create_task(stage.apply(adder, [accepted(second_item)], T0))
        await wait_until_blocked(observer, adder.get_server_pid())
        await closing.commit()
        with pytest.raises(ConcurrentChangeError, match="batches closed concurrently"):
            await task
        await adding.rollback()
    finally:
        for connection in (closer, adder, observer):
            await connection.close()

    await _apply(settings, stage, [accepted(second_item)])  # the retry
    connection = await connect(settings)
    try:
        rows = await connection.fetch(
            """SELECT i.payment_id, b.status, b.cycle_start FROM settlement_items i JOIN settlement_batches b
               USING (batch_id) WHERE i.payment_id LIKE 'race-batch-%' ORDER BY i.payment_id"""
        )
    finally:
        await connection.close()
    assert [(r["payment_id"], r["status"]) for r in rows] == [("race-batch-1", "closed"), ("race-batch-2", "open")]
    assert rows[1]["cycle_start"] > rows[0]["cycle_start"]


async def test_reconcile_reports_a_hold_open_past_its_bound(environment: Settings) -> None:
    await _held(environment, payment("race-stale-hold", created_at=T0))
    connection = await connect(environment)
    try:
        # Other tests of this module leave holds open at T0; only this one is placed "2 hours ago".
        await connection.execute("UPDATE holds SET created_at = now() WHERE status = 'held'")
        await connection.execute(
            "UPDATE holds SET created_at = now() - interval '2 hours' WHERE payment_id = 'race-stale-hold'"
        )
        report = await reconcile(connection, hold_open_s_max=3_600)
        relaxed = await reconcile(connection, hold_open_s_max=3 * 3_600)
        await connection.execute("UPDATE holds SET created_at = now() WHERE payment_id = 'race-stale-hold'")
    finally:
        await connection.close()
    stale = [v for v in report.violations if v.invariant == "hold_open_within_bound"]
    assert [e["payment_id"] for v in stale for e in v.examples] == ["race-stale-hold"]
    assert not [v for v in relaxed.violations if v.invariant == "hold_open_within_bound"]


async def _cleared(settings: Settings, request: PaymentRequested) -> Any:
    held = await _held(settings, request)
    result = await _apply(settings, ClearingStage(), [accepted(held)])
    return result.outputs[0].event
