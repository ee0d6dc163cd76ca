"""What must hold after any crash schedule, checked from the database and the topics."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from paystream.db.pool import connect
from paystream.reconcile import reconcile
from paystream.settings import Settings
from paystream.topic_scan import read_topic
from schemas.settlement import SettlementBatchClosed
from topology.topics import (
    FUNDS_HELD,
    PAYMENTS_APPROVED,
    PAYMENTS_CLEARED,
    PAYMENTS_OUTCOMES,
    SETTLEMENTS_CLOSED,
)

TERMINAL = ("rejected", "declined", "failed", "settled")


@dataclass
class CheckReport:
    payments: int = 0
    terminal: int = 0
    missing: list[str] = field(default_factory=list)
    not_terminal: dict[str, int] = field(default_factory=dict)
    duplicate_effects: dict[str, int] = field(default_factory=dict)
    reconcile_failures: list[str] = field(default_factory=list)
    # topic -> (records on the topic, distinct event ids): the difference was
    # delivered more than once and absorbed by the next stage's idempotency.
    redelivered: dict[str, tuple[int, int]] = field(default_factory=dict)
    batches_closed: int = 0
    batches_seen_downstream: int = 0
    downstream_mismatches: list[str] = field(default_factory=list)
    outcome_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.missing
            or self.not_terminal
            or any(self.duplicate_effects.values())
            or self.reconcile_failures
            or self.downstream_mismatches
            or self.outcome_problems
            or self.batches_seen_downstream != self.batches_closed
        )

    def problems(self) -> list[str]:
        found = []
        if self.missing:
            found.append(f"{len(self.missing)} payments missing, e.g. {self.missing[:5]}")
        if self.not_terminal:
            found.append(f"payments not terminal by status: {self.not_terminal}")
        found += [f"duplicate {name}: {n}" for name, n in self.duplicate_effects.items() if n]
        found += [f"reconcile: {line}" for line in self.reconcile_failures]
        found += self.downstream_mismatches + self.outcome_problems
        if self.batches_seen_downstream != self.batches_closed:
            found.append(
                f"downstream saw {self.batches_seen_downstream} batches, database closed {self.batches_closed}"
            )
        return found


DUPLICATE_EFFECT_QUERIES = {
    "holds": "SELECT count(*) - count(DISTINCT payment_id) FROM holds",
    "clearing journals": "SELECT count(*) - count(DISTINCT payment_id) FROM journals WHERE kind = 'clearing'",
    "payout journals": "SELECT count(*) - count(DISTINCT batch_id) FROM journals WHERE kind = 'payout'",
    "clearing entries": """SELECT count(*) FROM (SELECT e.journal_id FROM entries e
                           JOIN journals j USING (journal_id) WHERE j.kind = 'clearing'
                           GROUP BY e.journal_id HAVING count(*) > 3) x""",
    "clearing records": "SELECT count(*) - count(DISTINCT payment_id) FROM clearings",
    "settlement items": "SELECT count(*) - count(DISTINCT payment_id) FROM settlement_items",
}


async def check_run(settings: Settings, payment_ids: Sequence[str]) -> CheckReport:
    report = CheckReport(payments=len(payment_ids))
    connection = await connect(settings)
    try:
        rows = await connection.fetch(
            "SELECT payment_id, status FROM payments WHERE payment_id = ANY($1::text[])", list(payment_ids)
        )
        status_by_id = {row["payment_id"]: row["status"] for row in rows}
        report.missing = [p for p in payment_ids if p not in status_by_id]
        not_terminal = Counter(s for s in status_by_id.values() if s not in TERMINAL)
        report.not_terminal = dict(not_terminal)
        report.terminal = sum(1 for s in status_by_id.values() if s in TERMINAL)
        for name, sql in DUPLICATE_EFFECT_QUERIES.items():
            report.duplicate_effects[name] = int(await connection.fetchval(sql))
        reconciled = await reconcile(connection, hold_open_s_max=settings.hold_open_s_max)
        report.reconcile_failures = [str(v) for v in reconciled.failures()]
        closed = await connection.fetch(
            "SELECT batch_id, item_count, gross_minor, fee_minor, net_minor FROM settlement_batches"
            " WHERE status = 'closed'"
        )
    finally:
        await connection.close()
    report.batches_closed = len(closed)
    await _check_topics(settings, report, status_by_id, {row["batch_id"]: row for row in closed})
    return report


async def _check_topics(
    settings: Settings, report: CheckReport, status_by_id: dict[str, str], closed: dict[str, Any]
) -> None:
    for topic in (PAYMENTS_APPROVED, FUNDS_HELD, PAYMENTS_CLEARED, PAYMENTS_OUTCOMES):
        records = await read_topic(settings, settings.topic(topic))
        ids = [msgspec.json.decode(r.value)["event_id"] for r in records]
        report.redelivered[topic] = (len(ids), len(set(ids)))
        if topic == PAYMENTS_OUTCOMES:
            _check_outcomes(report, records, status_by_id)
    # A downstream consumer that keys on batch id: each batch once, totals equal.
    seen: dict[str, SettlementBatchClosed] = {}
    settlement_records = await read_topic(settings, settings.topic(SETTLEMENTS_CLOSED))
    for record in settlement_records:
        event = msgspec.json.decode(record.value, type=SettlementBatchClosed)
        previous = seen.setdefault(event.batch_id, event)
        if previous != event:
            report.downstream_mismatches.append(f"batch {event.batch_id} delivered with different totals")
    report.redelivered[SETTLEMENTS_CLOSED] = (len(settlement_records), len(seen))
    report.batches_seen_downstream = len(seen)
    for batch_id, event in seen.items():
        row = closed.get(batch_id)
        if row is None:
            report.downstream_mismatches.append(f"batch {batch_id} emitted but not closed in the database")
            continue
        totals = (event.item_count, event.gross_minor, event.fee_minor, event.net_minor)
        expected = (row["item_count"], row["gross_minor"], row["fee_minor"], row["net_minor"])
        if totals != expected:
            report.downstream_mismatches.append(f"batch {batch_id}: emitted {totals} != database {expected}")


def _check_outcomes(report: CheckReport, records: Sequence[Any], status_by_id: dict[str, str]) -> None:
    """Each terminal payment has its terminal outcome on the topic (duplicates allowed, same event)."""
    terminal_seen: dict[str, set[str]] = {}
    for record in records:
        outcome = msgspec.json.decode(record.value)
        if outcome["status"] in TERMINAL:
            terminal_seen.setdefault(outcome["payment_id"], set()).add(outcome["status"])
    for payment_id, status in status_by_id.items():
        statuses = terminal_seen.get(payment_id, set())
        if status in TERMINAL and statuses != {status}:
            report.outcome_problems.append(f"payment {payment_id} is {status} but outcomes say {statuses}")
