"""A short chaos run: SIGKILLs, one Kafka restart, one PostgreSQL restart, a stage scaled 1 -> 3 -> 1.

Its traffic mixes account requests into the payments: 16 fresh accounts
opened, funded, paid from, withdrawn from and half of them closed, and four
rounds of deposits and withdrawals on demo payers (`paystream.chaos.accounts`);
and the payment lifecycle (`paystream.chaos.lifecycle`): 4 accounts whose
manual-capture payments are captured in full and in part, voided and left to
expire half-way through the window, and 4 whose payments are refunded (in
part, in full, over, twice) once they are cleared.

`paystream chaos` (and `make chaos`) runs the same thing at full length. The run
happens once per module; each test checks one part of its report. Services the
local stack does not own are never restarted: the restart check then reports
itself skipped, with the reason, instead of passing without checking anything.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from paystream.chaos.run import ChaosOptions, ChaosReport, render_report, run_chaos
from paystream.prepare import drop_database, isolated_settings
from paystream.settings import load_settings
from paystream.stack.services import uses_local_stack

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

PAYMENTS = 1_500
FRESH_ACCOUNTS = 16  # half of them pay once: their payments are checked with the rest
DEMO_PAYER_ROUNDS = 4
CAPTURING_ACCOUNTS = 4  # four manual-capture payments each
REFUNDING_ACCOUNTS = 4  # two payments each, refunded


@pytest.fixture(scope="module")
async def chaos() -> AsyncIterator[tuple[ChaosReport, bool]]:
    """The run's report, and whether it restarted Kafka and PostgreSQL (only those of the local stack)."""
    settings = load_settings()
    restarts = uses_local_stack(settings)  # never restart services the stack does not own
    options = ChaosOptions(
        payments=PAYMENTS, duration_s=25.0, seed=20261124, kill_interval_s=3.0, restart_services=restarts,
        scale_stage="funds", drain_timeout_s=240.0, work_dir=settings.stack_dir / "chaos",
        fresh_accounts=FRESH_ACCOUNTS, demo_payer_rounds=DEMO_PAYER_ROUNDS,
        capturing_accounts=CAPTURING_ACCOUNTS, refunding_accounts=REFUNDING_ACCOUNTS,
    )  # fmt: skip
    report = await run_chaos(options, settings)
    print(render_report(report))
    try:
        yield report, restarts
    finally:
        await drop_database(isolated_settings(settings, report.namespace.rstrip(".")))


async def test_short_chaos_run_loses_nothing_and_applies_nothing_twice(chaos: tuple[ChaosReport, bool]) -> None:
    report, _ = chaos
    assert report.check is not None
    assert report.check.problems() == []
    assert report.check.ok
    lifecycle_payments = 4 * CAPTURING_ACCOUNTS + 2 * REFUNDING_ACCOUNTS
    assert report.check.terminal == report.check.payments == PAYMENTS + FRESH_ACCOUNTS // 2 + lifecycle_payments
    assert report.kills >= 3
    assert report.worker_restarts == report.kills
    assert report.scale_ups == 2
    assert report.scale_downs == 2
    assert report.check.batches_seen_downstream == report.check.batches_closed > 0


async def test_short_chaos_run_restarts_kafka_and_postgresql_once_each(chaos: tuple[ChaosReport, bool]) -> None:
    report, restarted = chaos
    if not restarted:
        assert (report.kafka_restarts, report.postgres_restarts) == (0, 0)  # it left them alone
        settings = load_settings()
        pytest.skip(
            f"Kafka ({settings.kafka_bootstrap}) and PostgreSQL are not the local stack's:"
            " the chaos run does not restart services it does not own, so restarts were not exercised"
        )
    assert (report.kafka_restarts, report.postgres_restarts) == (1, 1)


async def test_short_chaos_run_answers_every_account_request_once(chaos: tuple[ChaosReport, bool]) -> None:
    """Each request answered as scripted (`check.account_problems` would say otherwise), each outcome once."""
    report, _ = chaos
    check = report.check
    assert check is not None
    assert check.account_missing == []
    assert check.account_problems == []
    assert check.account_requests == report.account_requests > 0
    assert sum(check.account_answers.values()) == check.account_requests
    # Withdrawals declined for insufficient funds and rejected by risk are among them.
    assert set(check.account_answers) == {"succeeded", "declined", "rejected"}
    records, distinct = check.redelivered["accounts.outcomes"]
    assert distinct == check.account_requests
    assert records >= distinct


async def test_short_chaos_run_takes_every_payment_through_its_lifecycle_once(chaos: tuple[ChaosReport, bool]) -> None:
    """Captured in full and in part, voided, expired; refunds applied once each; nothing of it lost or doubled.

    `check.lifecycle_problems` would name a hold that ended otherwise than
    scripted, a clearing journal missing, doubled or for another amount, a
    refund applied twice or not at all, a refund without its settlement item,
    or an expired outcome missing; `check.outcome_problems` a copy of an event
    (an expired outcome re-sent by funds' timer included) with other bytes.
    """
    report, _ = chaos
    check = report.check
    assert check is not None
    assert check.lifecycle_problems == []
    assert check.outcome_problems == []
    # Per capturing account: F and P settled, V voided, E expired; per refunding account: G and H settled.
    assert check.lifecycle_payments == {
        "settled": 2 * CAPTURING_ACCOUNTS + 2 * REFUNDING_ACCOUNTS,
        "voided": CAPTURING_ACCOUNTS,
        "expired": CAPTURING_ACCOUNTS,
    }
    # Captures: 2 succeeded and 3 declined per capturing account, 1 succeeded per refunding account; a void;
    # refunds: one declined (of the voided payment) per capturing account, 3 succeeded and 2 declined per
    # refunding account.
    assert check.answers_by_kind["capture"] == {
        "succeeded": 2 * CAPTURING_ACCOUNTS + REFUNDING_ACCOUNTS,
        "declined": 3 * CAPTURING_ACCOUNTS,
    }
    assert check.answers_by_kind["void"] == {"succeeded": CAPTURING_ACCOUNTS}
    assert check.answers_by_kind["refund"] == {
        "succeeded": 3 * REFUNDING_ACCOUNTS,
        "declined": CAPTURING_ACCOUNTS + 2 * REFUNDING_ACCOUNTS,
    }
    assert check.refunds_applied == check.refund_items == 3 * REFUNDING_ACCOUNTS
    records, distinct = check.expired_outcomes
    assert distinct == CAPTURING_ACCOUNTS
    assert records >= distinct
