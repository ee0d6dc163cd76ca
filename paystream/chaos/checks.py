"""What must hold after any crash schedule, checked from the database and the topics.

Payments: each one terminal with its one terminal outcome, no effect applied
twice, reconcile green, each settlement batch seen downstream once with the
database's totals. Account requests (`paystream.chaos.accounts`): each one
answered exactly once (an `account_operations` row, or risk's rejection and
no operation), with the status and reason its script says; one journal per
succeeded deposit or withdrawal and none for any other request; the fresh
accounts' final balances; and on accounts.outcomes one event id per request,
every copy of it the same bytes and the same answer as the database.

The payment lifecycle (`paystream.chaos.lifecycle`): each scripted payment
ends as scripted (settled, voided, expired), its hold with the scripted
status, captured and released amounts (captured + released = amount); one
clearing journal per captured payment, its payer leg the captured amount,
none for a payment that captured nothing; each payment refunded as scripted;
each succeeded refund with one `refunds` row, one refund journal (payer leg
+amount), one settlement refund item in a closed batch, its
`payment.refunded` on payments.outcomes and `refund.cleared` on
payments.cleared under one event id each, and nothing of the kind for a
declined refund; each expired hold's outcome marked published. On every topic
checked, every copy of one event id is the same bytes (an expiry's outcome
re-sent by funds' timer included).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from paystream.chaos.accounts import AccountKey, AccountTraffic, ExpectedHold
from paystream.db.pool import connect
from paystream.reconcile import reconcile
from paystream.settings import Settings
from paystream.topic_scan import read_topic
from schemas.accounts import AccountOutcome, account_outcome_event_id
from schemas.payments import outcome_event_id
from schemas.refunds import RefundRequested, payment_refunded_event_id, refund_cleared_event_id
from schemas.settlement import SettlementBatchClosed
from topology.topics import (
    ACCOUNTS_OUTCOMES,
    FUNDS_HELD,
    PAYMENTS_APPROVED,
    PAYMENTS_CLEARED,
    PAYMENTS_OUTCOMES,
    SETTLEMENTS_CLOSED,
)

TERMINAL = ("rejected", "declined", "failed", "voided", "expired", "settled")
# The event topics whose copies are compared byte for byte, per event id.
EVENT_TOPICS = (PAYMENTS_APPROVED, FUNDS_HELD, PAYMENTS_CLEARED, PAYMENTS_OUTCOMES)


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
    # Account requests: distinct requests published, answers by status, unanswered, anything else wrong.
    account_requests: int = 0
    account_answers: dict[str, int] = field(default_factory=dict)
    account_missing: list[str] = field(default_factory=list)
    account_problems: list[str] = field(default_factory=list)
    # kind -> status -> requests: the answers above, by request kind.
    answers_by_kind: dict[str, dict[str, int]] = field(default_factory=dict)
    # The lifecycle's scripted payments by final status; refunds applied (a `refunds` row) and their
    # settlement items; expired outcomes on payments.outcomes (records, distinct event ids).
    lifecycle_payments: dict[str, int] = field(default_factory=dict)
    refunds_applied: int = 0
    refund_items: int = 0
    expired_outcomes: tuple[int, int] = (0, 0)
    lifecycle_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.missing
            or self.not_terminal
            or any(self.duplicate_effects.values())
            or self.reconcile_failures
            or self.downstream_mismatches
            or self.outcome_problems
            or self.account_missing
            or self.account_problems
            or self.lifecycle_problems
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
        if self.account_missing:
            found.append(f"{len(self.account_missing)} account requests unanswered, e.g. {self.account_missing[:5]}")
        found += self.account_problems + self.lifecycle_problems
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
    "deposit and withdrawal journals": """SELECT count(*) - count(DISTINCT (kind, request_id)) FROM journals
                                          WHERE kind IN ('deposit', 'withdrawal')""",
    # A journal that is not the one its succeeded request names moved money a second time (or for nothing).
    "deposit and withdrawal journals without their succeeded request": """SELECT count(*) FROM journals j
        WHERE j.kind IN ('deposit', 'withdrawal') AND NOT EXISTS (
            SELECT 1 FROM account_operations o
            WHERE o.journal_id = j.journal_id AND o.kind = j.kind AND o.status = 'succeeded')""",
    "deposit and withdrawal entries": """SELECT count(*) FROM (SELECT e.journal_id FROM entries e
                           JOIN journals j USING (journal_id) WHERE j.kind IN ('deposit', 'withdrawal')
                           GROUP BY e.journal_id HAVING count(*) <> 2) x""",
    "refund journals": "SELECT count(*) - count(DISTINCT request_id) FROM journals WHERE kind = 'refund'",
    "refund journals without their succeeded request": """SELECT count(*) FROM journals j
        WHERE j.kind = 'refund' AND NOT EXISTS (
            SELECT 1 FROM account_operations o
            WHERE o.journal_id = j.journal_id AND o.kind = 'refund' AND o.status = 'succeeded')""",
    "refund entries": """SELECT count(*) FROM (SELECT e.journal_id FROM entries e
                         JOIN journals j USING (journal_id) WHERE j.kind = 'refund'
                         GROUP BY e.journal_id HAVING count(*) > 3) x""",
}


async def check_run(
    settings: Settings, payment_ids: Sequence[str], accounts: AccountTraffic | None = None
) -> CheckReport:
    """The module docstring's checks for these payments and, with `accounts`, its requests and own payments."""
    if accounts is not None:
        payment_ids = list(dict.fromkeys([*payment_ids, *(p.payment_id for p in accounts.payments)]))
    report = CheckReport(payments=len(payment_ids))
    answers: dict[AccountKey, Answer] = {}
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
        if accounts is not None:
            answers = await _check_accounts(connection, report, accounts, status_by_id)
            await _check_lifecycle(connection, report, accounts, answers)
        reconciled = await reconcile(connection, hold_open_s_max=settings.hold_open_s_max)
        report.reconcile_failures = [str(v) for v in reconciled.failures()]
        closed = await connection.fetch(
            "SELECT batch_id, item_count, refund_count, gross_minor, fee_minor, net_minor FROM settlement_batches"
            " WHERE status = 'closed'"
        )
    finally:
        await connection.close()
    report.batches_closed = len(closed)
    copies = await _check_topics(settings, report, status_by_id, {row["batch_id"]: row for row in closed})
    if accounts is not None:
        await _check_account_outcomes(settings, report, answers)
        _check_lifecycle_events(report, accounts, answers, copies)
    return report


async def _check_topics(
    settings: Settings, report: CheckReport, status_by_id: dict[str, str], closed: dict[str, Any]
) -> dict[str, dict[str, list[bytes]]]:
    """The checks on the event topics; returns each topic's records by event id (their values, every copy)."""
    copies: dict[str, dict[str, list[bytes]]] = {}
    for topic in EVENT_TOPICS:
        records = await read_topic(settings, settings.topic(topic))
        by_id = copies.setdefault(topic, {})
        for record in records:
            value = bytes(record.value)
            by_id.setdefault(msgspec.json.decode(value)["event_id"], []).append(value)
        report.redelivered[topic] = (len(records), len(by_id))
        # Every copy of an event is built from the same stored rows: the same bytes.
        for event_id, values in sorted(by_id.items()):
            if len(set(values)) != 1:
                report.outcome_problems.append(
                    f"{topic}: event {event_id} delivered as {len(set(values))} different values"
                )
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
        totals = (event.item_count, event.refund_count, event.gross_minor, event.fee_minor, event.net_minor)
        expected = (row["item_count"], row["refund_count"], row["gross_minor"], row["fee_minor"], row["net_minor"])
        if totals != expected:
            report.downstream_mismatches.append(f"batch {batch_id}: emitted {totals} != database {expected}")
    return copies


def _check_outcomes(report: CheckReport, records: Sequence[Any], status_by_id: dict[str, str]) -> None:
    """Each terminal payment has its terminal outcome on the topic (duplicates allowed, same event)."""
    terminal_seen: dict[str, set[str]] = {}
    for record in records:
        outcome = msgspec.json.decode(record.value)
        if outcome.get("schema", "payment.outcome") == "payment.outcome" and outcome["status"] in TERMINAL:
            terminal_seen.setdefault(outcome["payment_id"], set()).add(outcome["status"])
    for payment_id, status in status_by_id.items():
        statuses = terminal_seen.get(payment_id, set())
        if status in TERMINAL and statuses != {status}:
            report.outcome_problems.append(f"payment {payment_id} is {status} but outcomes say {statuses}")


@dataclass(frozen=True, slots=True)
class Answer:
    """How the database answered an account request: its outcome's status, reason code and journal."""

    status: str
    reason: str
    journal_id: str | None


def _reason_code(reasons: Sequence[str]) -> str:
    return reasons[0].split(":")[0] if reasons else ""


ACCOUNT_ANSWERS_SQL = """
    SELECT v.kind, v.id AS request_id, r.decision, r.reasons AS risk_reasons,
           o.status, o.reasons, o.journal_id, o.account_id, o.amount_minor,
           (SELECT count(*) FROM journals j WHERE j.kind = v.kind AND j.request_id = v.id) AS journals,
           (SELECT sum(e.amount_minor) FROM journals j JOIN entries e USING (journal_id)
            WHERE j.kind = v.kind AND j.request_id = v.id AND e.account_id = o.account_id) AS account_leg
    FROM unnest($1::text[], $2::text[]) AS v(kind, id)
    LEFT JOIN account_requests r ON r.kind = v.kind AND r.request_id = v.id
    LEFT JOIN account_operations o ON o.kind = v.kind AND o.request_id = v.id
"""


async def _check_accounts(
    connection: Any, report: CheckReport, traffic: AccountTraffic, status_by_id: dict[str, str]
) -> dict[AccountKey, Answer]:
    """Each request answered once, as its script says, moving money once; the fresh accounts' end state."""
    keys = sorted(traffic.expected)
    report.account_requests = len(keys)
    rows = await connection.fetch(ACCOUNT_ANSWERS_SQL, [k for k, _ in keys], [i for _, i in keys])
    answers: dict[AccountKey, Answer] = {}
    problems = report.account_problems
    for row in rows:
        key = (row["kind"], row["request_id"])
        name = f"{key[0]} {key[1]}"
        if row["decision"] is None:
            report.account_missing.append(f"{name}: no risk decision")
            continue
        if row["decision"] == "rejected":
            answer = Answer("rejected", _reason_code(row["risk_reasons"]), None)
            if row["status"] is not None:
                problems.append(f"{name}: rejected by risk but applied by funds ({row['status']})")
        elif row["status"] is None:
            report.account_missing.append(f"{name}: approved by risk, never applied by funds")
            continue
        else:
            answer = Answer(row["status"], _reason_code(row["reasons"]), row["journal_id"])
        answers[key] = answer
        moved = answer.status == "succeeded" and key[0] in ("deposit", "withdrawal", "refund")
        if row["journals"] != (1 if moved else 0):
            problems.append(f"{name} ({answer.status}): {row['journals']} journals")
        elif moved:
            sign = -1 if key[0] == "withdrawal" else 1  # a refund credits the payer, as a deposit does
            if row["account_leg"] != sign * row["amount_minor"]:
                problems.append(f"{name}: the account's leg is {row['account_leg']}, not {sign * row['amount_minor']}")
        expected = traffic.expected[key]
        if (answer.status, answer.reason) != (expected.status, expected.reason):
            problems.append(f"{name}: answered {answer.status} {answer.reason!r}, expected {expected}")
    report.account_answers = dict(Counter(a.status for a in answers.values()))
    for (kind, _), answer in answers.items():
        by_status = report.answers_by_kind.setdefault(kind, {})
        by_status[answer.status] = by_status.get(answer.status, 0) + 1
    rows = await connection.fetch(
        "SELECT account_id, status, balance_minor, held_minor FROM accounts WHERE account_id = ANY($1::text[])",
        list(traffic.expected_accounts),
    )
    found = {row["account_id"]: row for row in rows}
    for account_id, want in traffic.expected_accounts.items():
        row = found.get(account_id)
        got = None if row is None else (row["status"], row["balance_minor"], row["held_minor"])
        if got != (want.status, want.balance_minor, 0):
            problems.append(f"account {account_id}: (status, balance, held) {got}, expected {want}")
    for payment_id, want_status in traffic.expected_payments.items():
        if status_by_id.get(payment_id) != want_status:
            problems.append(
                f"payment {payment_id} of a fresh account is {status_by_id.get(payment_id)}, not {want_status}"
            )
    return answers


LIFECYCLE_SQL = """
    SELECT v.id AS payment_id, p.status, p.amount_minor, p.refunded_minor,
           h.status AS hold, h.captured_minor, h.released_minor, h.expiry_published_at,
           c.gross_minor AS cleared_minor,
           (SELECT count(*) FROM journals j WHERE j.kind = 'clearing' AND j.payment_id = v.id) AS clearing_journals,
           (SELECT sum(e.amount_minor) FROM journals j JOIN entries e USING (journal_id)
            WHERE j.kind = 'clearing' AND j.payment_id = v.id AND e.account_id = p.payer_account) AS payer_leg
    FROM unnest($1::text[]) AS v(id)
    LEFT JOIN payments p ON p.payment_id = v.id
    LEFT JOIN holds h ON h.payment_id = v.id
    LEFT JOIN clearings c ON c.payment_id = v.id
"""

REFUNDS_SQL = """
    SELECT v.id AS refund_id, r.amount_minor, i.batch_id, b.status AS batch_status
    FROM unnest($1::text[]) AS v(id)
    LEFT JOIN refunds r ON r.refund_id = v.id
    LEFT JOIN settlement_refund_items i ON i.refund_id = v.id
    LEFT JOIN settlement_batches b ON b.batch_id = i.batch_id
"""


async def _check_lifecycle(
    connection: Any, report: CheckReport, traffic: AccountTraffic, answers: dict[AccountKey, Answer]
) -> None:
    """Each scripted payment's hold, clearing and refunded total as scripted; each refund applied once."""
    problems = report.lifecycle_problems
    rows = await connection.fetch(LIFECYCLE_SQL, sorted(traffic.expected_holds))
    statuses: Counter[str] = Counter()
    for row in rows:
        payment_id = row["payment_id"]
        statuses[str(row["status"])] += 1
        want = traffic.expected_holds[payment_id]
        got = None if row["hold"] is None else ExpectedHold(row["hold"], row["captured_minor"], row["released_minor"])
        if got != want:
            problems.append(f"payment {payment_id}: hold {got}, expected {want}")
        elif want.captured_minor + want.released_minor != row["amount_minor"]:
            problems.append(f"payment {payment_id}: captured + released != amount {row['amount_minor']}")
        captured = want.captured_minor
        # One clearing journal for a payment that captured something, debiting the payer exactly that; else none.
        clearing = (row["clearing_journals"], row["payer_leg"], row["cleared_minor"])
        if clearing != ((1, -captured, captured) if captured else (0, None, None)):
            problems.append(
                f"payment {payment_id}: (clearing journals, payer leg, cleared) {clearing}, captured {captured}"
            )
        refunded = traffic.expected_refunded.get(payment_id, 0)
        if row["refunded_minor"] != refunded:
            problems.append(f"payment {payment_id}: refunded {row['refunded_minor']}, expected {refunded}")
        if want.status == "expired" and row["expiry_published_at"] is None:
            problems.append(f"payment {payment_id}: expired, its outcome never marked published")
    report.lifecycle_payments = dict(statuses)
    refunds = sorted(request_id for kind, request_id in traffic.expected if kind == "refund")
    rows = await connection.fetch(REFUNDS_SQL, refunds)
    for row in rows:
        answer = answers.get(("refund", row["refund_id"]))
        succeeded = answer is not None and answer.status == "succeeded"
        applied = row["amount_minor"] is not None
        report.refunds_applied += applied
        report.refund_items += row["batch_id"] is not None
        if applied != succeeded or (row["batch_id"] is not None) != succeeded:
            problems.append(
                f"refund {row['refund_id']} ({answer and answer.status}): refund row {applied},"
                f" settlement item in {row['batch_id']}"
            )
        elif succeeded and row["batch_status"] != "closed":
            problems.append(f"refund {row['refund_id']}: its settlement item's batch is {row['batch_status']}")


def _check_lifecycle_events(
    report: CheckReport,
    traffic: AccountTraffic,
    answers: dict[AccountKey, Answer],
    copies: dict[str, dict[str, list[bytes]]],
) -> None:
    """Each succeeded refund's two events under one event id each, none of a declined one; expired outcomes."""
    problems = report.lifecycle_problems
    refunded_ids = {i for i in copies[PAYMENTS_OUTCOMES] if ":refund:" in i}
    cleared_ids = {i for i in copies[PAYMENTS_CLEARED] if i.startswith("refund:")}
    wanted_refunded: set[str] = set()
    wanted_cleared: set[str] = set()
    refunds = {r.request_id: r for r in traffic.requests if isinstance(r, RefundRequested)}
    for (kind, request_id), answer in answers.items():
        if kind == "refund" and answer.status == "succeeded":
            wanted_refunded.add(payment_refunded_event_id(refunds[request_id].payment_id, request_id))
            wanted_cleared.add(refund_cleared_event_id(request_id))
    ours = {request_id for kind, request_id in traffic.expected if kind == "refund"}
    seen_refunded = {i for i in refunded_ids if i.rsplit(":refund:", 1)[1] in ours}
    seen_cleared = {i for i in cleared_ids if i.removeprefix("refund:").removesuffix(":cleared") in ours}
    if seen_refunded != wanted_refunded:
        problems.append(f"payment.refunded event ids: missing {sorted(wanted_refunded - seen_refunded)},"
                        f" unexpected {sorted(seen_refunded - wanted_refunded)}")  # fmt: skip
    if seen_cleared != wanted_cleared:
        problems.append(f"refund.cleared event ids: missing {sorted(wanted_cleared - seen_cleared)},"
                        f" unexpected {sorted(seen_cleared - wanted_cleared)}")  # fmt: skip
    expired = [p for p, hold in traffic.expected_holds.items() if hold.status == "expired"]
    outcomes = copies[PAYMENTS_OUTCOMES]
    missing = [p for p in expired if outcome_event_id(p, "expired") not in outcomes]
    if missing:
        problems.append(f"{len(missing)} expired payments without their expired outcome, e.g. {missing[:5]}")
    report.expired_outcomes = (
        sum(len(outcomes.get(outcome_event_id(p, "expired"), [])) for p in expired),
        len(expired) - len(missing),
    )


async def _check_account_outcomes(settings: Settings, report: CheckReport, answers: dict[AccountKey, Answer]) -> None:
    """Downstream deduplicating by event id sees exactly one outcome per request, the database's answer."""
    records = await read_topic(settings, settings.topic(ACCOUNTS_OUTCOMES))
    copies: dict[str, set[bytes]] = {}
    ids_by_key: dict[AccountKey, set[str]] = {}
    problems = report.account_problems
    for record in records:
        value = bytes(record.value)
        try:
            outcome = msgspec.json.decode(value, type=AccountOutcome)
        except msgspec.DecodeError as error:  # ValidationError included
            problems.append(f"{ACCOUNTS_OUTCOMES} {record.partition}/{record.offset} is no account outcome: {error}")
            continue
        copies.setdefault(outcome.event_id, set()).add(value)
        ids_by_key.setdefault((outcome.kind, outcome.request_id), set()).add(outcome.event_id)
    report.redelivered[ACCOUNTS_OUTCOMES] = (len(records), len(copies))
    for key, answer in sorted(answers.items()):
        name = f"{key[0]} {key[1]}"
        ids = ids_by_key.get(key, set())
        if ids != {account_outcome_event_id(*key)}:
            problems.append(f"{name}: outcome event ids on the topic {sorted(ids)}")
            continue
        values = copies[account_outcome_event_id(*key)]
        if len(values) != 1:
            problems.append(f"{name}: {len(values)} different copies of its outcome event")
            continue
        outcome = msgspec.json.decode(next(iter(values)), type=AccountOutcome)
        seen = Answer(outcome.status, _reason_code(outcome.reasons), outcome.journal_id)
        if seen != answer:
            problems.append(f"{name}: the outcome says {seen}, the database {answer}")


async def unanswered_account_requests(connection: Any, keys: Sequence[AccountKey]) -> int:
    """How many of these requests have neither risk's rejection nor funds' operation yet."""
    value = await connection.fetchval(
        """SELECT count(*) FROM unnest($1::text[], $2::text[]) AS v(kind, id)
           WHERE NOT EXISTS (SELECT 1 FROM account_requests r
                             WHERE r.kind = v.kind AND r.request_id = v.id AND r.decision = 'rejected')
             AND NOT EXISTS (SELECT 1 FROM account_operations o WHERE o.kind = v.kind AND o.request_id = v.id)""",
        [k for k, _ in keys],
        [i for _, i in keys],
    )
    return int(value)
