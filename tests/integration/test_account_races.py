"""Account requests decided by two transactions at once, interleaved step by step on the real PostgreSQL.

The first transaction holds its locks while the second runs until PostgreSQL
makes it wait; then the first commits. That is a retry racing its own
unacknowledged commit, or two consumers meeting on one account because
upstream keyed a request by something else than the account.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from paystream.db.pool import connect
from paystream.errors import ConcurrentChangeError
from paystream.prepare import drop_database
from paystream.reconcile import reconcile
from paystream.settings import Settings
from paystream.stage.contract import Accepted, StageResult
from schemas.accounts import AccountOpenRequested, AccountOutcome, DepositRequested, WithdrawalRequested
from tests.support.pipeline import fresh_environment
from tests.support.stages import accepted, payment, race
from workers.funds import FundsStage
from workers.risk import RiskStage

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
async def environment() -> AsyncIterator[Settings]:
    settings = await fresh_environment("acrace")
    yield settings
    await drop_database(settings)


async def _apply(settings: Settings, stage: Any, records: list[Accepted[Any]]) -> StageResult:
    connection = await connect(settings)
    try:
        async with connection.transaction():
            result: StageResult = await stage.apply(connection, records, T0)
            return result
    finally:
        await connection.close()


async def _approved(settings: Settings, request: Any, partition: int = 0) -> Accepted[Any]:
    """Risk applied and committed for `request`: its account.request.approved (or payment's risk.assessed)."""
    result = await _apply(settings, RiskStage(settings), [accepted(request)])
    assert result.refused == [] and result.outputs[0].topic == "payments.approved", result
    return accepted(result.outputs[0].event, partition=partition)


def _status(result: StageResult) -> list[tuple[str, str]]:
    found = []
    for output in result.outputs:
        event = output.event
        if isinstance(event, AccountOutcome):
            found.append((event.status, event.reasons[0].split(":")[0] if event.reasons else ""))
        else:
            found.append((type(event).__name__, ""))
    return found


async def _fetch(settings: Settings, query: str, *args: Any) -> list[Any]:
    connection = await connect(settings)
    try:
        return list(await connection.fetch(query, *args))
    finally:
        await connection.close()


def opening(request_id: str, account: str) -> AccountOpenRequested:
    return AccountOpenRequested(request_id=request_id, account_id=account, owner_id="o", currency="EUR", created_at=T0)


async def test_one_request_id_for_two_accounts_ends_with_one_stored_request(environment: Settings) -> None:
    first, second = await race(
        environment,
        RiskStage(environment),
        [accepted(opening("race-open", "race-acct-a"))],
        [accepted(opening("race-open", "race-acct-b"), partition=1)],
        T0,
    )
    assert [o.event.account_id for o in first.outputs] == ["race-acct-a"]
    assert second.outputs == []
    assert [(r.field, r.rule) for r in second.refused] == [("request_id", "idempotency_conflict")]
    rows = await _fetch(environment, "SELECT account_id FROM account_requests WHERE request_id = 'race-open'")
    assert [r["account_id"] for r in rows] == ["race-acct-a"]


async def test_two_opens_of_one_account_id_leave_one_account_and_the_retry_is_declined(environment: Settings) -> None:
    one = await _approved(environment, opening("race-open-1", "race-twice"))
    two = await _approved(environment, opening("race-open-2", "race-twice"), partition=1)
    stage = FundsStage()
    first, second = await race(environment, stage, [one], [two], T0)
    assert _status(first) == [("succeeded", "")]
    # The second waited on the first's insert, found the id taken and asks for a retry...
    assert isinstance(second, ConcurrentChangeError), second
    # ...which decides on what is stored now.
    retried = await _apply(environment, stage, [two])
    assert _status(retried) == [("declined", "account_exists")]
    rows = await _fetch(environment, "SELECT owner_id FROM accounts WHERE account_id = 'race-twice'")
    assert len(rows) == 1


async def test_a_withdrawal_and_a_payment_racing_on_one_account_cannot_both_pass(environment: Settings) -> None:
    account = "race-spend"
    stage = FundsStage()
    for request in (
        opening("race-spend-open", account),
        DepositRequested(request_id="race-spend-dep", account_id=account, amount_minor=1_000, currency="EUR",
                         source_ref="S", created_at=T0),
    ):  # fmt: skip
        await _apply(environment, stage, [await _approved(environment, request)])
    withdrawal = await _approved(
        environment,
        WithdrawalRequested(request_id="race-spend-wd", account_id=account, amount_minor=700, currency="EUR",
                            destination_ref="D", created_at=T0),
    )  # fmt: skip
    # The payment keyed by another key reaches a second funds consumer (partition 1).
    held = await _approved(environment, payment("race-spend-pay", payer=account, amount_minor=600, created_at=T0), 1)
    first, second = await race(environment, stage, [withdrawal], [held], T0)
    assert _status(first) == [("succeeded", "")]
    # The payment's hold was decided after the withdrawal committed: 300 left, 600 declined.
    assert [o.event.status for o in second.outputs] == ["declined"]
    assert second.outputs[0].event.reasons[0].startswith("insufficient_funds: available 300")
    (row,) = await _fetch(environment, "SELECT balance_minor, held_minor FROM accounts WHERE account_id = $1", account)
    assert (row["balance_minor"], row["held_minor"]) == (300, 0)


async def test_a_deposit_retry_racing_its_first_commit_returns_the_stored_outcome(environment: Settings) -> None:
    account = "race-retry"
    stage = FundsStage()
    await _apply(environment, stage, [await _approved(environment, opening("race-retry-open", account))])
    deposit = await _approved(
        environment,
        DepositRequested(request_id="race-retry-dep", account_id=account, amount_minor=500, currency="EUR",
                         source_ref="S", created_at=T0),
    )  # fmt: skip
    first, second = await race(environment, stage, [deposit], [deposit], T0)
    assert _status(first) == _status(second) == [("succeeded", "")]
    assert [o.event for o in first.outputs] == [o.event for o in second.outputs]
    journals = await _fetch(environment, "SELECT journal_id FROM journals WHERE request_id = 'race-retry-dep'")
    assert [j["journal_id"] for j in journals] == ["deposit:race-retry-dep"]
    (row,) = await _fetch(environment, "SELECT balance_minor FROM accounts WHERE account_id = $1", account)
    assert row["balance_minor"] == 500


async def test_the_races_leave_the_books_balanced(environment: Settings) -> None:
    connection = await connect(environment)
    try:
        report = await reconcile(connection, hold_open_s_max=environment.hold_open_s_max)
    finally:
        await connection.close()
    # The payment held nowhere and never cleared; every invariant that reads money holds.
    assert [v.invariant for v in report.failures()] == []
