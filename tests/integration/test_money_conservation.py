"""Money is conserved end to end on the real stack, and a replay of the whole input changes nothing.

One environment (own topics, own database) for the module: a few hundred
seeded payments over four currencies, many merchants and a small pool of
payers per currency (so a payer's holds interleave), every outcome kind the
generator makes, processed by all four stages until every payment is terminal
and every batch closed and published. The expected amounts come from sources
the pipeline does not compute them from: the seeded demo world's opening
balances and fee schedules, an exact-rational fee formula, and the outcomes as
a downstream consumer reads them from the topic.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec
import pytest
from aiokafka import AIOKafkaConsumer
from msgspec import structs

from paystream.db.pool import connect
from paystream.demo_data import CURRENCIES, build_world
from paystream.generator import GeneratedPayment
from paystream.ledger import fee_revenue_account, funding_account, merchant_pending_account, payout_clearing_account
from paystream.prepare import drop_database
from paystream.reconcile import reconcile
from paystream.settings import Settings
from paystream.topic_scan import read_topic, topic_partitions
from tests.support.money import independent_fee
from tests.support.pipeline import drain, fresh_environment, generate, publish, wait_terminal
from topology.topics import (
    FUNDS_HELD,
    PAYMENTS_APPROVED,
    PAYMENTS_CLEARED,
    PAYMENTS_OUTCOMES,
    PAYMENTS_REQUESTED,
    SETTLEMENTS_CLOSED,
)
from workers.fees import FeeSchedule

pytestmark = pytest.mark.integration

PAYMENTS = 400
SEED = 29
PAYERS_PER_CURRENCY = 8
# Each stage and the topic it consumes, for rewinding them all to the beginning.
STAGE_INPUTS = {
    "risk": PAYMENTS_REQUESTED,
    "funds": PAYMENTS_APPROVED,
    "clearing": FUNDS_HELD,
    "settlement": PAYMENTS_CLEARED,
}
# Whole rows as PostgreSQL's text, in key order: a byte-for-byte picture of each table.
SNAPSHOT_TABLES = {
    "journals": "journal_id",
    "entries": "entry_id",
    "holds": "payment_id",
    "clearings": "payment_id",
    "settlement_items": "payment_id",
    "settlement_batches": "batch_id",
    "accounts": "account_id",
    "payments": "payment_id",
    "risk_decisions": "payment_id",
    "risk_merchant_day_totals": "merchant_id, currency, day",
    "dead_letters": "event_id",
}


def traffic(id_prefix: str) -> list[GeneratedPayment]:
    """Seeded generator traffic whose ordinary payments come from a few payers per currency."""
    world = build_world()
    excluded = set(world.blocked_payers) | set(world.poor_payers)
    rng = random.Random(SEED)
    pools = {
        currency: rng.sample(
            [
                p.account_id
                for p in world.payers
                if p.currency == currency and p.status == "open" and p.account_id not in excluded
            ],
            PAYERS_PER_CURRENCY,
        )
        for currency in CURRENCIES
    }
    result = []
    for g in generate(PAYMENTS, id_prefix, seed=SEED):
        payment = g.payment
        if g.kind == "ordinary":
            payment = structs.replace(payment, payer_account=rng.choice(pools[payment.currency]))
        result.append(GeneratedPayment(g.kind, payment))
    return result


@dataclass
class Run:
    settings: Settings
    payments: list[GeneratedPayment]
    statuses: dict[str, str]


@pytest.fixture(scope="module")
async def run() -> AsyncIterator[Run]:
    settings = await fresh_environment("money")
    payments = traffic(settings.namespace.rstrip("."))
    await publish(settings, payments)
    await drain(settings)
    statuses = await wait_terminal(settings, [g.payment.payment_id for g in payments])
    yield Run(settings, payments, statuses)
    await drop_database(settings)


async def fetch(settings: Settings, sql: str, *args: Any) -> list[asyncpg.Record]:
    connection = await connect(settings)
    try:
        return list(await connection.fetch(sql, *args))
    finally:
        await connection.close()


def by_currency(rows: list[asyncpg.Record], column: str) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for row in rows:
        totals[row["currency"].strip()] += row[column]
    return dict(totals)


async def test_money_is_conserved_per_currency(run: Run) -> None:
    settings = run.settings
    # Entries by (currency, journal kind, account kind): the ledger as the accountant sees it.
    flows: dict[tuple[str, str, str], int] = defaultdict(int)
    for row in await fetch(
        settings,
        """SELECT j.currency, j.kind AS journal_kind, a.kind AS account_kind, sum(e.amount_minor) AS total
           FROM entries e JOIN journals j USING (journal_id) JOIN accounts a USING (account_id)
           GROUP BY 1, 2, 3""",
    ):
        flows[(row["currency"].strip(), row["journal_kind"], row["account_kind"])] = int(row["total"])
    clearings = await fetch(settings, "SELECT * FROM clearings")
    batches = await fetch(settings, "SELECT * FROM settlement_batches")
    items = await fetch(settings, "SELECT * FROM settlement_items")
    schedules = {
        (row["merchant_id"], row["currency"].strip()): FeeSchedule(row["fee_bps"], row["fixed_minor"], row["min_minor"])
        for row in await fetch(settings, "SELECT * FROM merchant_fee_schedules")
    }

    # The run is not trivial: most payments cleared, in every currency, and some did not.
    assert len(clearings) > PAYMENTS * 0.7
    assert {c["currency"].strip() for c in clearings} == set(CURRENCIES)
    assert set(Counter(run.statuses.values())) >= {"settled", "rejected", "declined"}

    # Each fee is the merchant's schedule applied by the exact-rational formula (JPY included).
    for c in clearings:
        schedule = schedules[(c["merchant_id"], c["currency"].strip())]
        assert c["fee_minor"] == independent_fee(c["gross_minor"], schedule), c["payment_id"]
        assert c["fee_minor"] + c["net_minor"] == c["gross_minor"]

    gross, fees, nets = (by_currency(clearings, column) for column in ("gross_minor", "fee_minor", "net_minor"))
    closed = [b for b in batches if b["status"] == "closed"]
    assert len(closed) == len(batches), "every batch closed"
    closed_net, closed_gross = by_currency(closed, "net_minor"), by_currency(closed, "gross_minor")
    for currency in CURRENCIES:
        debited = -flows[(currency, "clearing", "customer")]
        merchants_net = flows[(currency, "clearing", "merchant_pending")]
        platform_fees = flows[(currency, "clearing", "fee_revenue")]
        # Payers' debits = merchants' net + platform fees, and each equals what clearing recorded.
        assert debited == merchants_net + platform_fees, currency
        assert (debited, merchants_net, platform_fees) == (gross[currency], nets[currency], fees[currency])
        # Closed batches' net = payouts posted (to the payout account, from the merchants' pending).
        paid_out = flows[(currency, "payout", "payout_clearing")]
        assert paid_out == -flows[(currency, "payout", "merchant_pending")] == closed_net[currency], currency
        # Every cleared payment was settled: the batches carry all of it.
        assert closed_gross[currency] == gross[currency]
        assert closed_net[currency] == nets[currency]
        assert sum(total for (c, _, _), total in flows.items() if c == currency) == 0

    # Each closed batch's totals are the sums of its items.
    items_of: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for item in items:
        items_of[item["batch_id"]].append(item)
    for b in closed:
        own = items_of[b["batch_id"]]
        assert (b["item_count"], b["gross_minor"], b["fee_minor"], b["net_minor"]) == (
            len(own),
            sum(i["gross_minor"] for i in own),
            sum(i["fee_minor"] for i in own),
            sum(i["net_minor"] for i in own),
        ), b["batch_id"]
    assert sum(len(v) for v in items_of.values()) == len(clearings)

    connection = await connect(settings)
    try:
        report = await reconcile(connection)
    finally:
        await connection.close()
    assert report.failures() == []


async def test_every_account_balance_is_its_entries_and_its_history(run: Run) -> None:
    """Each account's entries add up to what the seeded world and the business records say it must hold."""
    settings = run.settings
    world = build_world()
    accounts = {row["account_id"]: row for row in await fetch(settings, "SELECT * FROM accounts")}
    entries = {
        row["account_id"]: int(row["total"])
        for row in await fetch(settings, "SELECT account_id, sum(amount_minor) AS total FROM entries GROUP BY 1")
    }
    clearings = await fetch(settings, "SELECT * FROM clearings")
    closed = await fetch(settings, "SELECT * FROM settlement_batches WHERE status = 'closed'")

    expected: dict[str, int] = defaultdict(int)
    for payer in world.payers:
        # Each open payer was funded by one deposit; a closed one was opened and closed empty.
        deposited = payer.balance_minor if payer.status == "open" else 0
        expected[payer.account_id] += deposited
        expected[funding_account(payer.currency)] -= deposited
    for c in clearings:
        currency = c["currency"].strip()
        expected[c["payer_account"]] -= c["gross_minor"]
        expected[merchant_pending_account(c["merchant_id"], currency)] += c["net_minor"]
        expected[fee_revenue_account(currency)] += c["fee_minor"]
    for b in closed:
        currency = b["currency"].strip()
        expected[merchant_pending_account(b["merchant_id"], currency)] -= b["net_minor"]
        expected[payout_clearing_account(currency)] += b["net_minor"]

    assert set(entries) <= set(accounts)
    for account_id, account in accounts.items():
        assert entries.get(account_id, 0) == expected.get(account_id, 0), account_id
        if account["kind"] == "customer":
            # The stored balance is its entries; with every payment terminal, nothing is held.
            assert account["balance_minor"] == entries.get(account_id, 0), account_id
            assert account["held_minor"] == 0, account_id
    assert {a for a in expected if expected[a]} <= set(accounts)


async def test_outcomes_downstream_agree_with_the_database(run: Run) -> None:
    settings = run.settings
    records = await read_topic(settings, settings.topic(PAYMENTS_OUTCOMES))
    by_event: dict[str, set[bytes]] = defaultdict(set)
    for record in records:
        by_event[msgspec.json.decode(record.value)["event_id"]].add(record.value)
    # A consumer keyed on event id sees each event once; re-deliveries are byte-for-byte the same.
    assert all(len(values) == 1 for values in by_event.values())
    outcomes = [msgspec.json.decode(next(iter(values))) for values in by_event.values()]

    cleared = [o for o in outcomes if o["status"] == "cleared"]
    settled = [o for o in outcomes if o["status"] == "settled"]
    clearings = await fetch(settings, "SELECT * FROM clearings")
    items = {row["payment_id"]: row["batch_id"] for row in await fetch(settings, "SELECT * FROM settlement_items")}
    payer_debits = {
        row["account_id"]: -int(row["total"])
        for row in await fetch(
            settings,
            """SELECT e.account_id, sum(e.amount_minor) AS total FROM entries e JOIN journals j USING (journal_id)
               WHERE j.kind = 'clearing' AND e.amount_minor < 0 GROUP BY 1""",
        )
    }
    closed_gross = by_currency(
        await fetch(settings, "SELECT * FROM settlement_batches WHERE status = 'closed'"), "gross_minor"
    )

    # Cleared outcomes: the same payments and, per currency and per payer, the amounts the ledger debited.
    assert sorted(o["payment_id"] for o in cleared) == sorted(c["payment_id"] for c in clearings)
    downstream_by_currency: dict[str, int] = defaultdict(int)
    downstream_by_payer: dict[str, int] = defaultdict(int)
    for o in cleared:
        downstream_by_currency[o["currency"]] += o["amount_minor"]
        downstream_by_payer[o["payer_account"]] += o["amount_minor"]
    assert downstream_by_currency == by_currency(clearings, "gross_minor")
    assert downstream_by_payer == payer_debits

    # Settled outcomes: every cleared payment, in the batch the database put it in, for the batches' gross.
    assert {o["payment_id"]: o["batch_id"] for o in settled} == items
    settled_by_currency: dict[str, int] = defaultdict(int)
    for o in settled:
        settled_by_currency[o["currency"]] += o["amount_minor"]
    assert settled_by_currency == closed_gross

    # Each payment's terminal outcome is its status in the database.
    terminal = {o["payment_id"]: o["status"] for o in outcomes if o["status"] in ("rejected", "declined", "settled")}
    failed = {o["payment_id"]: o["status"] for o in outcomes if o["status"] == "failed"}
    assert {**terminal, **failed} == run.statuses

    # Settlement events: one per batch, with the database's totals.
    batches = {row["batch_id"]: row for row in await fetch(settings, "SELECT * FROM settlement_batches")}
    events = {}
    for record in await read_topic(settings, settings.topic(SETTLEMENTS_CLOSED)):
        event = msgspec.json.decode(record.value)
        events[event["batch_id"]] = event
    assert set(events) == set(batches)
    for batch_id, event in events.items():
        row = batches[batch_id]
        expected = (row["item_count"], row["gross_minor"], row["fee_minor"], row["net_minor"])
        assert (event["item_count"], event["gross_minor"], event["fee_minor"], event["net_minor"]) == expected


async def snapshot(settings: Settings) -> dict[str, list[str]]:
    connection = await connect(settings)
    try:
        return {
            table: [row[0] for row in await connection.fetch(f"SELECT t::text FROM {table} t ORDER BY {key}")]
            for table, key in SNAPSHOT_TABLES.items()
        }
    finally:
        await connection.close()


async def rewind(settings: Settings, stage: str, topic: str) -> None:
    """Move a stage's committed offsets, in Kafka and in PostgreSQL, back to the start of its topic."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=settings.group(stage), enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, settings.topic(topic))
        assert tps
        consumer.assign(tps)
        await consumer.commit({tp: 0 for tp in tps})
    finally:
        await consumer.stop()
    connection = await connect(settings)
    try:
        moved = await connection.execute(
            "UPDATE stage_offsets SET next_offset = 0 WHERE group_id = $1", settings.group(stage)
        )
    finally:
        await connection.close()
    assert moved != "UPDATE 0", f"no stored offsets for {stage}"


async def test_replaying_all_input_from_the_beginning_changes_nothing(run: Run) -> None:
    # Runs after the checks above (module order): they saw the state this replay must keep.
    settings = run.settings
    before = await snapshot(settings)
    outcome_ids_before = {
        msgspec.json.decode(r.value)["event_id"] for r in await read_topic(settings, settings.topic(PAYMENTS_OUTCOMES))
    }
    for stage, topic in STAGE_INPUTS.items():
        await rewind(settings, stage, topic)
    await drain(settings, idle_exit_ms=3_000)
    after = await snapshot(settings)

    for table in SNAPSHOT_TABLES:
        assert after[table] == before[table], f"{table} changed on replay"
    assert len(before["entries"]) > PAYMENTS  # the snapshot is not empty

    # The replay re-sent the events: the same ids, each re-delivery byte-for-byte the first.
    records = await read_topic(settings, settings.topic(PAYMENTS_OUTCOMES))
    by_event: dict[str, set[bytes]] = defaultdict(set)
    for record in records:
        by_event[msgspec.json.decode(record.value)["event_id"]].add(record.value)
    assert set(by_event) == outcome_ids_before
    assert all(len(values) == 1 for values in by_event.values())
    assert len(records) > len(outcome_ids_before)  # something was in fact re-sent
