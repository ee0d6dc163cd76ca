"""The whole pipeline on the real Kafka broker and PostgreSQL server.

One environment (own topics, own database) for the module: 600 generated
payments with every kind of outcome, 40 of them published twice, and a few
invalid records, processed by all four stages until idle.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import msgspec
import pytest

from paystream.db.pool import connect
from paystream.prepare import drop_database
from paystream.reconcile import reconcile
from paystream.settings import Settings
from paystream.topic_scan import read_topic
from tests.support.pipeline import TERMINAL, drain, fresh_environment, generate, publish, wait_terminal
from topology.topics import DEAD_LETTER, PAYMENTS_OUTCOMES, PAYMENTS_REQUESTED, SETTLEMENTS_CLOSED

pytestmark = pytest.mark.integration

PAYMENTS = 600
DUPLICATES = 40
INVALID = {
    b"\x00\x01garbage": ("$", "json"),
    b'{"payment_id": "cut': ("$", "json"),
    b'{"schema":"payment.requested","v":1,"payment_id":"neg","payer_account":"payer-000001",'
    b'"merchant_id":"merchant-000","amount_minor":-1,"currency":"EUR","country":"DE","method":"card",'
    b'"created_at":"2026-01-01T00:00:00Z"}': ("amount_minor", "range"),
    b'{"schema":"payment.requested","v":1,"payment_id":"cur","payer_account":"payer-000001",'
    b'"merchant_id":"merchant-000","amount_minor":5,"currency":"ZZZ","country":"DE","method":"card",'
    b'"created_at":"2026-01-01T00:00:00Z"}': ("currency", "enum"),
    b'{"schema":"payment.requested","v":1,"payment_id":"miss","merchant_id":"merchant-000",'
    b'"amount_minor":5,"currency":"EUR","country":"DE","method":"card",'
    b'"created_at":"2026-01-01T00:00:00Z"}': ("payer_account", "required"),
}


@dataclass
class Processed:
    settings: Settings
    payment_ids: list[str]
    duplicate_ids: list[str]
    kinds: Counter[str]
    statuses: dict[str, str]


@pytest.fixture(scope="module")
async def processed() -> Processed:
    settings = await fresh_environment("pipe")
    generated = generate(PAYMENTS, settings.namespace.rstrip("."))
    await publish(settings, generated + generated[:DUPLICATES], raw=list(INVALID))
    await drain(settings)
    ids = [g.payment.payment_id for g in generated]
    statuses = await wait_terminal(settings, ids)
    yield Processed(settings, ids, ids[:DUPLICATES], Counter(g.kind for g in generated), statuses)
    await drop_database(settings)


async def test_every_payment_has_exactly_one_terminal_status(processed: Processed) -> None:
    assert sorted(processed.statuses) == sorted(processed.payment_ids)
    counts = Counter(processed.statuses.values())
    assert set(counts) <= set(TERMINAL), counts
    # The mix reaches every outcome: most settle, some are rejected, some declined.
    assert counts["settled"] > PAYMENTS * 0.7
    assert counts["rejected"] > 0
    assert counts["declined"] > 0


async def test_rejections_and_declines_match_what_was_generated(processed: Processed) -> None:
    connection = await connect(processed.settings)
    try:
        rows = await connection.fetch(
            """SELECT payment_id, status, risk_reasons, decline_reasons, metadata->>'kind' AS kind
               FROM payments WHERE payment_id = ANY($1::text[])""",
            processed.payment_ids,
        )
    finally:
        await connection.close()
    expected_reason = {
        "over_txn_limit": "txn_amount_limit",
        "blocked_payer": "blocked_payer",
        "blocked_country": "blocked_country",
        "blocked_merchant": "blocked_merchant",
        "merchant_not_accepting": "merchant_not_accepting",
        "poor_payer": "insufficient_funds",
        "closed_account": "account_closed",
        "unknown_account": "unknown_account",
    }
    for row in rows:
        reasons = [r.split(":")[0] for r in row["risk_reasons"] + row["decline_reasons"]]
        if row["kind"] == "ordinary":
            assert row["status"] == "settled", (row["payment_id"], reasons)
        else:
            assert expected_reason[row["kind"]] in reasons, (row["payment_id"], row["kind"], reasons)


async def test_duplicate_payment_is_processed_once(processed: Processed) -> None:
    connection = await connect(processed.settings)
    try:
        per_table = {
            table: await connection.fetchval(
                f"SELECT count(*) FROM {table} WHERE payment_id = ANY($1::text[])",
                processed.duplicate_ids,
            )
            for table in ("risk_decisions", "payments")
        }
        holds = await connection.fetchval(
            "SELECT count(*) - count(DISTINCT payment_id) FROM holds WHERE payment_id = ANY($1::text[])",
            processed.duplicate_ids,
        )
        journals = await connection.fetchval(
            "SELECT count(*) - count(DISTINCT payment_id) FROM journals WHERE payment_id = ANY($1::text[])",
            processed.duplicate_ids,
        )
    finally:
        await connection.close()
    assert per_table == {"risk_decisions": DUPLICATES, "payments": DUPLICATES}
    assert holds == 0
    assert journals == 0
    # Downstream sees each outcome once per event id, even if delivered twice.
    outcomes = await read_topic(processed.settings, processed.settings.topic(PAYMENTS_OUTCOMES))
    terminal_by_payment: dict[str, set[str]] = {}
    for record in outcomes:
        event = msgspec.json.decode(record.value)
        if event["status"] in TERMINAL:
            terminal_by_payment.setdefault(event["payment_id"], set()).add(event["event_id"])
    assert all(len(terminal_by_payment[p]) == 1 for p in processed.payment_ids)


async def test_invalid_records_are_dead_lettered_with_reasons(processed: Processed) -> None:
    connection = await connect(processed.settings)
    try:
        rows = await connection.fetch(
            "SELECT field, rule, raw, origin_topic, origin_offset FROM dead_letters WHERE stage = 'risk'"
        )
    finally:
        await connection.close()
    by_raw = {bytes(row["raw"]): (row["field"], row["rule"]) for row in rows}
    assert by_raw == INVALID
    assert {row["origin_topic"] for row in rows} == {processed.settings.topic(PAYMENTS_REQUESTED)}
    on_topic = await read_topic(processed.settings, processed.settings.topic(DEAD_LETTER))
    letters = [msgspec.json.decode(r.value) for r in on_topic]
    assert sorted((d["field"], d["rule"]) for d in letters) == sorted(INVALID.values())


async def test_reconcile_passes(processed: Processed) -> None:
    connection = await connect(processed.settings)
    try:
        report = await reconcile(connection)
    finally:
        await connection.close()
    assert report.failures() == []


async def test_settlement_totals_equal_cleared_amounts(processed: Processed) -> None:
    connection = await connect(processed.settings)
    try:
        cleared = await connection.fetch(
            """SELECT merchant_id, currency, count(*) AS n, sum(gross_minor) AS gross, sum(fee_minor) AS fee,
                      sum(net_minor) AS net FROM clearings GROUP BY 1, 2 ORDER BY 1, 2"""
        )
        settled = await connection.fetch(
            """SELECT merchant_id, currency, sum(item_count) AS n, sum(gross_minor) AS gross,
                      sum(fee_minor) AS fee, sum(net_minor) AS net
               FROM settlement_batches WHERE status = 'closed' GROUP BY 1, 2 ORDER BY 1, 2"""
        )
    finally:
        await connection.close()
    assert [tuple(r) for r in cleared] == [tuple(r) for r in settled]
    assert len(cleared) > 3
    emitted = await read_topic(processed.settings, processed.settings.topic(SETTLEMENTS_CLOSED))
    per_batch = {msgspec.json.decode(r.value)["batch_id"]: msgspec.json.decode(r.value) for r in emitted}
    assert sum(b["net_minor"] for b in per_batch.values()) == sum(r["net"] for r in settled)
