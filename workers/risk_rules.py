"""Risk rules as pure functions: the same batch and context always give the same decisions.

The risk stage loads a `RiskContext` for a batch (limits, blocklists, the
payers' recent approved payments, merchants' daily totals) and calls
`assess_batch`. Payments are assessed in input order and each approval is
added to the context, so two payments of one payer in one batch see each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from schemas.payments import PaymentRequested

VELOCITY_SHORT_WINDOW = timedelta(minutes=10)
VELOCITY_LONG_WINDOW = timedelta(hours=24)


REASON_CHARS_MAX = 200  # the contract's bound on one reason


def utc_day(at: datetime) -> date:
    """The UTC calendar day: one instant counts toward one day whatever offset the sender used."""
    return at.astimezone(UTC).date()


@dataclass(frozen=True, slots=True)
class RiskLimits:
    txn_amount_max_minor: int
    payer_10m_count_max: int
    payer_10m_amount_max_minor: int
    payer_24h_count_max: int
    payer_24h_amount_max_minor: int
    merchant_daily_amount_max_minor: int


@dataclass(slots=True)
class RiskContext:
    limits: dict[str, RiskLimits]
    # (kind, value) -> reason; kind is payer, merchant or country.
    blocked: dict[tuple[str, str], str]
    # (merchant_id, currency) pairs with an active merchant and a fee schedule.
    accepting: set[tuple[str, str]]
    # Merchants an operator suspended (`paystream merchants suspend`).
    suspended: set[str] = field(default_factory=set)
    # payer -> approved (created_at, amount_minor) within the long window.
    payer_history: dict[str, list[tuple[datetime, int]]] = field(default_factory=dict)
    # (merchant_id, currency, UTC day) -> approved amount that day.
    merchant_day_amount: dict[tuple[str, str, date], int] = field(default_factory=dict)

    def record_approval(self, payment: PaymentRequested) -> None:
        self.payer_history.setdefault(payment.payer_account, []).append((payment.created_at, payment.amount_minor))
        key = (payment.merchant_id, payment.currency, utc_day(payment.created_at))
        self.merchant_day_amount[key] = self.merchant_day_amount.get(key, 0) + payment.amount_minor


@dataclass(frozen=True, slots=True)
class RiskDecision:
    payment_id: str
    approved: bool
    reasons: tuple[str, ...]


def _window(history: Sequence[tuple[datetime, int]], end: datetime, length: timedelta) -> tuple[int, int]:
    """Count and amount of approvals in (end - length, end]."""
    start = end - length
    count = amount = 0
    for created_at, amount_minor in history:
        if start < created_at <= end:
            count += 1
            amount += amount_minor
    return count, amount


def assess(payment: PaymentRequested, context: RiskContext) -> tuple[str, ...]:
    """Every rule the payment breaks, in a fixed order; empty means approved."""
    reasons: list[str] = []
    for kind, value in (
        ("payer", payment.payer_account),
        ("merchant", payment.merchant_id),
        ("country", payment.country),
    ):
        if (kind, value) in context.blocked:
            reasons.append(f"blocked_{kind}: {context.blocked[(kind, value)]}")
    if payment.merchant_id in context.suspended:
        reasons.append(f"merchant_suspended: {payment.merchant_id} is suspended")
    elif (payment.merchant_id, payment.currency) not in context.accepting:
        reasons.append(f"merchant_not_accepting: {payment.merchant_id} takes no {payment.currency}")
    limits = context.limits.get(payment.currency)
    if limits is None:
        reasons.append(f"currency_not_configured: no risk limits for {payment.currency}")
        return tuple(reason[:REASON_CHARS_MAX] for reason in reasons)
    amount = payment.amount_minor
    if amount > limits.txn_amount_max_minor:
        reasons.append(f"txn_amount_limit: {amount} > {limits.txn_amount_max_minor}")
    history = context.payer_history.get(payment.payer_account, [])
    for label, window, count_max, amount_max in (
        ("10m", VELOCITY_SHORT_WINDOW, limits.payer_10m_count_max, limits.payer_10m_amount_max_minor),
        ("24h", VELOCITY_LONG_WINDOW, limits.payer_24h_count_max, limits.payer_24h_amount_max_minor),
    ):
        count, total = _window(history, payment.created_at, window)
        if count + 1 > count_max:
            reasons.append(f"payer_velocity_{label}_count: {count + 1} > {count_max}")
        if total + amount > amount_max:
            reasons.append(f"payer_velocity_{label}_amount: {total + amount} > {amount_max}")
    day_key = (payment.merchant_id, payment.currency, utc_day(payment.created_at))
    day_total = context.merchant_day_amount.get(day_key, 0) + amount
    if day_total > limits.merchant_daily_amount_max_minor:
        reasons.append(f"merchant_daily_limit: {day_total} > {limits.merchant_daily_amount_max_minor}")
    return tuple(reason[:REASON_CHARS_MAX] for reason in reasons)


def assess_batch(payments: Sequence[PaymentRequested], context: RiskContext) -> list[RiskDecision]:
    decisions = []
    for payment in payments:
        reasons = assess(payment, context)
        if not reasons:
            context.record_approval(payment)
        decisions.append(RiskDecision(payment.payment_id, not reasons, reasons))
    return decisions
