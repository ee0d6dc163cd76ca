"""Accounts opened, funded, paid from, paid out and closed through Kafka only, by an independent client.

The upstream events are plain JSON documents, each checked against its
committed JSON Schema file (schemas/json) and published with confluent-kafka
(librdkafka), keyed by account like paystream's own publisher. Outcomes are
read back from accounts.outcomes and payments.outcomes with librdkafka too;
balances, journals and reconcile are checked in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from jsonschema import Draft202012Validator, FormatChecker

from paystream.db.pool import connect
from paystream.demo_data import build_world
from paystream.prepare import drop_database
from paystream.reconcile import reconcile
from paystream.settings import Settings
from tests.support.pipeline import drain, fresh_environment, wait_terminal
from topology.topics import ACCOUNTS_OUTCOMES, PAYMENTS_OUTCOMES, PAYMENTS_REQUESTED

pytestmark = pytest.mark.integration

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas" / "json"
MERCHANT = "merchant-000"  # takes EUR in the demo world


def validator(schema: str) -> Draft202012Validator:
    document = json.loads((SCHEMA_DIR / f"{schema}.v1.json").read_text("utf-8"))
    return Draft202012Validator(document, format_checker=FormatChecker())


def now() -> str:
    return datetime.now(UTC).isoformat()


def document(schema: str, **fields: Any) -> dict[str, Any]:
    """A request as an outside publisher writes it, refused here if the schema file refuses it."""
    body = {"schema": schema, "v": 1, "created_at": now(), **fields}
    errors = list(validator(schema).iter_errors(body))
    assert not errors, [e.message for e in errors]
    return body


def publish(settings: Settings, documents: list[dict[str, Any]]) -> None:
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": "murmur2_random",  # the Java clients' and aiokafka's: one account, one partition
        }
    )
    for body in documents:
        key = body.get("account_id") or body["payer_account"]
        producer.produce(settings.topic(PAYMENTS_REQUESTED), key=str(key).encode(), value=json.dumps(body).encode())
    assert producer.flush(30) == 0


def consume(settings: Settings, topic: str, group: str) -> list[dict[str, Any]]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([settings.topic(topic)])
    events: list[dict[str, Any]] = []
    empty_polls = 0
    try:
        while empty_polls < 8:
            message = consumer.poll(1.0)
            if message is None:
                empty_polls += 1
                continue
            assert message.error() is None, message.error()
            events.append(json.loads(message.value() or b"null"))
            empty_polls = 0
    finally:
        consumer.close()
    return events


async def fetch(settings: Settings, query: str, *args: Any) -> list[Any]:
    connection = await connect(settings)
    try:
        return list(await connection.fetch(query, *args))
    finally:
        await connection.close()


@dataclass
class Lifecycle:
    settings: Settings
    outcomes: dict[tuple[str, str], dict[str, Any]]  # (kind, request_id) -> last outcome
    outcome_count: dict[tuple[str, str], int]


@pytest.fixture(scope="module")
async def lifecycle() -> AsyncIterator[Lifecycle]:
    settings = await fresh_environment("acct")
    world = build_world()
    blocked = world.blocked_payers[0]
    blocked_currency = next(p.currency for p in world.payers if p.account_id == blocked)
    a, b = "acct-alice", "acct-bob"
    first = [
        # Published in one go: the deposit must be applied before the payment's hold,
        # and the payment's hold before the withdrawals, because they share a key.
        document("account.open.requested", request_id="open-a", account_id=a, owner_id="alice", currency="EUR"),
        document(
            "deposit.requested",
            request_id="dep-a1",
            account_id=a,
            amount_minor=10_000,
            currency="EUR",
            source_ref="SEPA 0001",
        ),
        {
            "schema": "payment.requested",
            "v": 1,
            "payment_id": "pay-a1",
            "payer_account": a,
            "merchant_id": MERCHANT,
            "amount_minor": 6_000,
            "currency": "EUR",
            "country": "DE",
            "method": "wallet",
            "created_at": now(),
        },
        # With 6,000 held, 4,000 are available: 5,000 is declined, then 4,000 passes.
        document(
            "withdrawal.requested",
            request_id="wd-a1",
            account_id=a,
            amount_minor=5_000,
            currency="EUR",
            destination_ref="DE89370400440532013000",
        ),
        document(
            "withdrawal.requested",
            request_id="wd-a2",
            account_id=a,
            amount_minor=4_000,
            currency="EUR",
            destination_ref="DE89370400440532013000",
        ),
        # The same deposit again: answered like the first, money moved once.
        document(
            "deposit.requested",
            request_id="dep-a1",
            account_id=a,
            amount_minor=10_000,
            currency="EUR",
            source_ref="SEPA 0001",
        ),
        # Declines with a reason.
        document(
            "deposit.requested",
            request_id="dep-x",
            account_id="acct-nobody",
            amount_minor=100,
            currency="EUR",
            source_ref="SEPA 0002",
        ),
        document("account.open.requested", request_id="open-b", account_id=b, owner_id="bob", currency="USD"),
        document(
            "deposit.requested",
            request_id="dep-b-eur",
            account_id=b,
            amount_minor=100,
            currency="EUR",
            source_ref="SEPA 0003",
        ),
        document("account.open.requested", request_id="open-b-again", account_id=b, owner_id="bob", currency="USD"),
        # Risk applies the blocklist to withdrawals.
        document(
            "withdrawal.requested",
            request_id="wd-blocked",
            account_id=blocked,
            amount_minor=100,
            currency=blocked_currency,
            destination_ref="X 1",
        ),
    ]
    # Malformed requests: dead-lettered at risk with the field and rule, nothing applied.
    bad = [
        {
            **document(
                "deposit.requested",
                request_id="bad-zero",
                account_id=a,
                amount_minor=1,
                currency="EUR",
                source_ref="S 1",
            ),
            "amount_minor": 0,
        },
        {
            **document(
                "deposit.requested",
                request_id="bad-neg",
                account_id=a,
                amount_minor=1,
                currency="EUR",
                source_ref="S 1",
            ),
            "amount_minor": -5,
        },
        {
            **document(
                "deposit.requested",
                request_id="bad-huge",
                account_id=a,
                amount_minor=1,
                currency="EUR",
                source_ref="S 1",
            ),
            "amount_minor": 10**15 + 1,
        },
        {
            **document(
                "withdrawal.requested",
                request_id="bad-cur",
                account_id=a,
                amount_minor=1,
                currency="EUR",
                destination_ref="D 1",
            ),
            "currency": "XXX",
        },
        {
            **document(
                "deposit.requested",
                request_id="bad-ref",
                account_id=a,
                amount_minor=1,
                currency="EUR",
                source_ref="S 1",
            ),
            "source_ref": "two  spaces",
        },
        {
            **document(
                "deposit.requested",
                request_id="bad-schema",
                account_id=a,
                amount_minor=1,
                currency="EUR",
                source_ref="S 1",
            ),
            "schema": "chargeback.requested",
        },
        {
            **document("account.open.requested", request_id="bad-extra", account_id=a, owner_id="x", currency="EUR"),
            "amount_minor": 5,
        },
    ]
    # The same deposit id with another amount: a conflict, refused; the first stands.
    conflict = document(
        "deposit.requested",
        request_id="dep-a1",
        account_id=a,
        amount_minor=99_999,
        currency="EUR",
        source_ref="SEPA 0001",
    )
    try:
        await asyncio.to_thread(publish, settings, first + bad + [conflict])
        await drain(settings)
        await wait_terminal(settings, ["pay-a1"])
        closing = [
            document("account.close.requested", request_id="close-a", account_id=a),
            document("account.close.requested", request_id="close-b", account_id=b),
            document(
                "deposit.requested",
                request_id="dep-a-late",
                account_id=a,
                amount_minor=50,
                currency="EUR",
                source_ref="SEPA 0004",
            ),
        ]
        await asyncio.to_thread(publish, settings, closing)
        await drain(settings)
        events = await asyncio.to_thread(consume, settings, ACCOUNTS_OUTCOMES, f"{settings.namespace}check")
        outcomes: dict[tuple[str, str], dict[str, Any]] = {}
        counts: dict[tuple[str, str], int] = {}
        for event in events:
            key = (event["kind"], event["request_id"])
            outcomes[key] = event
            counts[key] = counts.get(key, 0) + 1
        yield Lifecycle(settings, outcomes, counts)
    finally:
        await drop_database(settings)


def status_of(lifecycle: Lifecycle, kind: str, request_id: str) -> tuple[str, str]:
    event = lifecycle.outcomes[(kind, request_id)]
    return event["status"], (event["reasons"][0].split(":")[0] if event["reasons"] else "")


async def test_every_request_is_answered_with_its_status_and_reason(lifecycle: Lifecycle) -> None:
    answers = {key: status_of(lifecycle, *key) for key in lifecycle.outcomes}
    assert answers == {
        ("account.open", "open-a"): ("succeeded", ""),
        ("deposit", "dep-a1"): ("succeeded", ""),
        ("withdrawal", "wd-a1"): ("declined", "insufficient_funds"),
        ("withdrawal", "wd-a2"): ("succeeded", ""),
        ("deposit", "dep-x"): ("declined", "unknown_account"),
        ("account.open", "open-b"): ("succeeded", ""),
        ("deposit", "dep-b-eur"): ("declined", "currency_mismatch"),
        ("account.open", "open-b-again"): ("declined", "account_exists"),
        ("withdrawal", "wd-blocked"): ("rejected", "blocked_payer"),
        # After the payment was captured and 4,000 withdrawn, alice holds nothing.
        ("account.close", "close-a"): ("succeeded", ""),
        ("account.close", "close-b"): ("succeeded", ""),
        ("deposit", "dep-a-late"): ("declined", "account_closed"),
    }
    # The repeated deposit was answered again with the same event (same id): downstream drops it.
    assert lifecycle.outcome_count[("deposit", "dep-a1")] == 2
    ids = {e["event_id"] for e in lifecycle.outcomes.values()}
    assert len(ids) == len(lifecycle.outcomes)


async def test_malformed_and_conflicting_requests_are_dead_lettered_with_field_and_rule(lifecycle: Lifecycle) -> None:
    rows = await fetch(lifecycle.settings, "SELECT stage, field, rule, detail FROM dead_letters ORDER BY origin_offset")
    assert sorted((r["stage"], r["field"], r["rule"]) for r in rows) == sorted(
        [
            ("risk", "amount_minor", "range"),
            ("risk", "amount_minor", "range"),
            ("risk", "amount_minor", "range"),
            ("risk", "currency", "enum"),
            ("risk", "source_ref", "pattern"),
            ("risk", "schema", "schema"),
            ("risk", "amount_minor", "unknown_field"),
            ("risk", "request_id", "idempotency_conflict"),
        ]
    )
    assert not any(key[1].startswith("bad-") for key in lifecycle.outcomes)


async def test_money_moved_once_through_balanced_journals(lifecycle: Lifecycle) -> None:
    settings = lifecycle.settings
    (alice,) = await fetch(settings, "SELECT * FROM accounts WHERE account_id = 'acct-alice'")
    assert (alice["status"], alice["balance_minor"], alice["held_minor"]) == ("closed", 0, 0)
    (payment,) = await fetch(settings, "SELECT status, gross_minor FROM payments WHERE payment_id = 'pay-a1'")
    assert (payment["status"], payment["gross_minor"]) == ("settled", 6_000)
    journals = await fetch(
        settings,
        """SELECT j.kind, j.request_id, array_agg(e.account_id || '=' || e.amount_minor ORDER BY e.amount_minor) AS legs
           FROM journals j JOIN entries e USING (journal_id)
           WHERE j.kind IN ('deposit', 'withdrawal') AND j.request_id IN ('dep-a1', 'wd-a2', 'wd-a1')
           GROUP BY 1, 2 ORDER BY 1, 2""",
    )
    assert [(j["kind"], j["request_id"], j["legs"]) for j in journals] == [
        ("deposit", "dep-a1", ["platform:funding:EUR=-10000", "acct-alice=10000"]),
        ("withdrawal", "wd-a2", ["acct-alice=-4000", "platform:payouts:EUR=4000"]),
    ]
    entries = await fetch(settings, "SELECT sum(amount_minor) AS total FROM entries WHERE account_id = 'acct-alice'")
    assert entries[0]["total"] == 0


async def test_the_payment_outcome_follows_the_deposit(lifecycle: Lifecycle) -> None:
    events = await asyncio.to_thread(
        consume, lifecycle.settings, PAYMENTS_OUTCOMES, f"{lifecycle.settings.namespace}payments"
    )
    statuses = [e["status"] for e in events if e["payment_id"] == "pay-a1"]
    assert statuses == ["cleared", "settled"]


async def test_reconcile_is_green_after_the_lifecycle(lifecycle: Lifecycle) -> None:
    connection = await connect(lifecycle.settings)
    try:
        report = await reconcile(connection, hold_open_s_max=lifecycle.settings.hold_open_s_max)
    finally:
        await connection.close()
    assert report.failures() == []
