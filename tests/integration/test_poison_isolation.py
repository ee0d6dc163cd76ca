"""Poison records: a record that makes a stage's `apply` fail must not stop its partition.

The poison is real: a trigger in the test's own database refuses rows of
chosen payment ids, the way PostgreSQL refuses a value it cannot store. The
loop must dead-letter exactly those records (stage, exception, origin), apply
every other record of the batch, end the poisoned payments that already held
money, and go on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import msgspec
import pytest

from paystream.db.pool import connect
from paystream.prepare import drop_database
from paystream.reconcile import reconcile
from paystream.runner import run_stages
from paystream.settings import Settings
from paystream.stage.isolation import applies_bound, apply_isolating
from paystream.topic_scan import read_topic
from tests.support.pipeline import fresh_environment, generate, publish, wait_terminal
from tests.support.stages import accepted, payment, publish_requests
from topology.topics import PAYMENTS_OUTCOMES
from workers import STAGE_NAMES
from workers.risk import RiskStage

pytestmark = pytest.mark.integration

POISON_TABLES = {
    "risk": "risk_decisions",
    "funds": "holds",
    "clearing": "clearings",
    "settlement": "settlement_items",
}


async def _poison(settings: Settings, table: str, pattern: str) -> None:
    """Make PostgreSQL refuse any row of `table` whose payment id matches `pattern`."""
    connection = await connect(settings)
    try:
        await connection.execute(
            f"""
            CREATE OR REPLACE FUNCTION poison_{table}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.payment_id LIKE '{pattern}' THEN
                    RAISE EXCEPTION 'test poison: % refused in {table}', NEW.payment_id;
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER poison BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION poison_{table}();
            """
        )
    finally:
        await connection.close()


@pytest.fixture
async def environment() -> AsyncIterator[Settings]:
    settings = await fresh_environment("poison")
    yield settings
    await drop_database(settings)


async def test_one_poison_record_among_2000_costs_a_logarithmic_number_of_applies(environment: Settings) -> None:
    await _poison(environment, "risk_decisions", "%-poison")
    now = datetime.now(UTC)
    requests = [g.payment for g in generate(2_000, "iso", seed=11)]
    poisoned_at = 1_234
    requests[poisoned_at] = msgspec.structs.replace(requests[poisoned_at], payment_id="iso-poison")
    records = [accepted(r, offset=i) for i, r in enumerate(requests)]

    connection = await connect(environment)
    try:
        async with connection.transaction():
            isolation = await apply_isolating(connection, RiskStage(environment), records, now)
        stored = await connection.fetchval("SELECT count(*) FROM risk_decisions")
    finally:
        await connection.close()

    assert [(r.origin.offset, r.event.payment_id) for r, _ in isolation.poisoned] == [(poisoned_at, "iso-poison")]
    assert "test poison: iso-poison refused" in str(isolation.poisoned[0][1])
    assert isolation.applies <= applies_bound(2_000, 1) == 23
    good_ids = {r.payment_id for r in requests} - {"iso-poison"}
    assert stored == len(good_ids)
    # Every good record got its event, in input order.
    emitted = [o.event for o in isolation.result.outputs]
    assert len(emitted) == len(records) - 1


async def test_poison_at_every_stage_is_dead_lettered_and_the_rest_flows(environment: Settings) -> None:
    for stage, table in POISON_TABLES.items():
        await _poison(environment, table, f"%-poison-{stage}")
    generated = generate(120, "flow", seed=5)
    good_ids = [g.payment.payment_id for g in generated]
    poison = [payment(f"flow-poison-{stage}", amount_minor=500 + i) for i, stage in enumerate(POISON_TABLES)]
    await publish(environment, generated[:60])
    await publish_requests(environment, poison)
    await publish(environment, generated[60:])

    stats = await run_stages(environment, STAGE_NAMES, idle_exit_ms=4_000)
    statuses = await wait_terminal(environment, good_ids, timeout_s=120)

    assert {stage: stats[stage].poisoned >= 1 for stage in STAGE_NAMES} == dict.fromkeys(STAGE_NAMES, True)
    assert set(statuses.values()) <= {"rejected", "declined", "settled"}, Counter(statuses.values())
    connection = await connect(environment)
    try:
        letters = await connection.fetch(
            "SELECT stage, field, rule, detail, origin_topic FROM dead_letters ORDER BY stage"
        )
        rows = {
            r["payment_id"]: r
            for r in await connection.fetch(
                """SELECT p.payment_id, p.status, p.failure_reasons, h.status AS hold
                   FROM payments p LEFT JOIN holds h USING (payment_id)
                   WHERE p.payment_id LIKE 'flow-poison-%'"""
            )
        }
        held_minor = await connection.fetchval("SELECT held_minor FROM accounts WHERE account_id = 'payer-000000'")
        report = await reconcile(connection)
    finally:
        await connection.close()

    by_stage = {r["stage"]: r for r in letters}
    assert sorted(by_stage) == sorted(POISON_TABLES)
    for stage, letter in by_stage.items():
        assert (letter["field"], letter["rule"]) == ("$", "stage_error")
        assert letter["detail"].startswith(f"{stage} could not apply it: RaiseError: test poison: flow-poison-{stage}")
    assert "flow-poison-risk" not in rows  # risk never stored it: the dead letter is its only answer
    assert (rows["flow-poison-funds"]["status"], rows["flow-poison-funds"]["hold"]) == ("failed", None)
    assert (rows["flow-poison-clearing"]["status"], rows["flow-poison-clearing"]["hold"]) == ("failed", "released")
    assert rows["flow-poison-clearing"]["failure_reasons"][0].startswith("clearing could not apply it")
    assert rows["flow-poison-settlement"]["status"] == "cleared"  # money moved; reconcile reports it after 5 min
    assert held_minor == 0
    assert report.ok, [str(v) for v in report.violations]

    outcomes = [
        msgspec.json.decode(r.value) for r in await read_topic(environment, environment.topic(PAYMENTS_OUTCOMES))
    ]
    failed = sorted((o["payment_id"], o["stage"]) for o in outcomes if o["status"] == "failed")
    assert failed == [("flow-poison-clearing", "clearing"), ("flow-poison-funds", "funds")]
