"""A risk configuration change decides the running risk stage's next batch, without a restart.

One risk stage runs for the whole test (run_stages, stopped at the end). A
payment is published and decided; the configuration is changed through
paystream/risk_config.py; the next payment of the same payer, published after
the change committed, is decided by the same running stage under the new rule.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import pytest

from paystream.db.pool import connect
from paystream.prepare import drop_database
from paystream.risk_config import block, set_limits, show_limits, unblock
from paystream.runner import run_stages
from paystream.settings import Settings
from paystream.stage.stats import LoopStats
from paystream.topic_scan import read_topic
from tests.support.pipeline import fresh_environment
from tests.support.stages import payment, publish_requests
from topology.topics import PAYMENTS_OUTCOMES

pytestmark = pytest.mark.integration

DECISION_WAIT_S = 60.0  # a hang guard: a running stage decides within a second or two
STOP_WAIT_S = 60.0


@dataclass(frozen=True)
class Decision:
    decision: str
    reasons: list[str]
    assessed_at: datetime


@pytest.fixture(scope="module")
async def environment() -> AsyncIterator[Settings]:
    settings = await fresh_environment("riskcfgstage")
    yield settings
    await drop_database(settings)


@pytest.fixture
async def connection(environment: Settings) -> AsyncIterator[Any]:
    conn = await connect(environment, migrated=True)
    try:
        yield conn
    finally:
        await conn.close()


@asynccontextmanager
async def running_risk_stage(settings: Settings, stats: dict[str, LoopStats]) -> AsyncIterator[asyncio.Task[Any]]:
    """The risk stage running in this process until the block ends; its stats are put in `stats`."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_stages(settings, ["risk"], stop=stop))
    try:
        yield task
    finally:
        stop.set()
        stats.update(await asyncio.wait_for(task, STOP_WAIT_S))


async def decided(connection: Any, task: asyncio.Task[Any], payment_id: str) -> Decision:
    """The risk decision of a payment, once the running stage stored it."""
    deadline = time.monotonic() + DECISION_WAIT_S
    while True:
        row = await connection.fetchrow(
            "SELECT decision, reasons, assessed_at FROM risk_decisions WHERE payment_id = $1", payment_id
        )
        if row is not None:
            return Decision(row["decision"], list(row["reasons"]), row["assessed_at"])
        assert not task.done(), f"the risk stage ended before deciding {payment_id}: {task}"
        assert time.monotonic() < deadline, f"{payment_id} not decided within {DECISION_WAIT_S} s"
        await asyncio.sleep(0.1)


async def changed_at(connection: Any, change_id: int | None) -> datetime:
    assert change_id is not None
    value = await connection.fetchval("SELECT changed_at FROM risk_config_audit WHERE change_id = $1", change_id)
    assert isinstance(value, datetime)
    return value


async def test_a_block_and_an_unblock_decide_the_next_batch(environment: Settings, connection: Any) -> None:
    ns = environment.namespace.rstrip(".")
    payer = "payer-000000"  # open, rich in EUR, not on the demo blocklist
    before, during, after = (payment(f"{ns}-block-{n}", payer=payer, amount_minor=1_000) for n in range(3))
    stats: dict[str, LoopStats] = {}
    async with running_risk_stage(environment, stats) as task:
        await publish_requests(environment, [before])
        first = await decided(connection, task, before.payment_id)
        assert (first.decision, first.reasons) == ("approved", [])

        blocked = await block(connection, "payer", payer, "chargeback ring", "risk-desk")
        blocked_at = await changed_at(connection, blocked.change_id)
        await publish_requests(environment, [during])
        second = await decided(connection, task, during.payment_id)
        assert (second.decision, second.reasons) == ("rejected", ["blocked_payer: chargeback ring"])

        _, unblock_id = await unblock(connection, "payer", payer, "risk-desk")
        unblocked_at = await changed_at(connection, unblock_id)
        await publish_requests(environment, [after])
        third = await decided(connection, task, after.payment_id)
        assert (third.decision, third.reasons) == ("approved", [])
        assert not task.done()  # one run of the stage decided all three
    # Each decision was taken on the configuration committed before its batch.
    assert first.assessed_at < blocked_at < second.assessed_at < unblocked_at < third.assessed_at
    assert stats["risk"].batches >= 3
    assert stats["risk"].records == 3

    # Downstream sees the rejection with the block's reason.
    outcomes = [
        msgspec.json.decode(r.value) for r in await read_topic(environment, environment.topic(PAYMENTS_OUTCOMES))
    ]
    rejected = [o for o in outcomes if o["payment_id"] == during.payment_id]
    assert [(o["status"], o["reasons"]) for o in rejected] == [("rejected", ["blocked_payer: chargeback ring"])]
    status = await connection.fetchval("SELECT status FROM payments WHERE payment_id = $1", during.payment_id)
    assert status == "rejected"


async def test_a_lowered_transaction_limit_decides_the_next_batch(environment: Settings, connection: Any) -> None:
    ns = environment.namespace.rstrip(".")
    payer = "payer-000004"  # EUR, open, rich, not blocked
    original = (await show_limits(connection, "EUR"))[0].txn_amount_max_minor
    assert original > 5_000
    before, during, after = (payment(f"{ns}-limit-{n}", payer=payer, amount_minor=5_000) for n in range(3))
    stats: dict[str, LoopStats] = {}
    async with running_risk_stage(environment, stats) as task:
        await publish_requests(environment, [before])
        first = await decided(connection, task, before.payment_id)
        assert (first.decision, first.reasons) == ("approved", [])

        lowered = await set_limits(connection, "EUR", {"txn_amount_max_minor": 4_999}, "risk-desk")
        assert lowered.old is not None and lowered.old.txn_amount_max_minor == original
        lowered_at = await changed_at(connection, lowered.change_id)
        await publish_requests(environment, [during])
        second = await decided(connection, task, during.payment_id)
        assert (second.decision, second.reasons) == ("rejected", ["txn_amount_limit: 5000 > 4999"])

        restored = await set_limits(connection, "EUR", {"txn_amount_max_minor": original}, "risk-desk")
        restored_at = await changed_at(connection, restored.change_id)
        await publish_requests(environment, [after])
        third = await decided(connection, task, after.payment_id)
        assert (third.decision, third.reasons) == ("approved", [])
        assert not task.done()
    assert first.assessed_at < lowered_at < second.assessed_at < restored_at < third.assessed_at
    assert stats["risk"].batches >= 3
