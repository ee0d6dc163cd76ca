"""The figures of one window: what an outcome adds to it, and how a window is shown.

A window's value is plain JSON (faust writes it to the table's changelog as
it is), one entry per currency, so amounts of different currencies are never
added together:

    {"EUR": {"counts": {"cleared": 3}, "amount_minor": {"cleared": 4500},
             "reasons": {"velocity_limit": 1}, "reasons_other": 0}}

Guarantees: `add_fact` returns a new value and leaves its argument as it was;
every figure is a whole number (rates are computed only when shown); reasons
are counted by their code; a window keeps at most REASONS_KEPT_MAX distinct
codes per currency and counts the rest in `reasons_other`, so a window's size
is bounded whatever the reasons say.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from paystream.views.windows import WindowRange, window_end_s
from schemas.payments import PaymentOutcome
from schemas.refunds import PaymentRefunded
from schemas.retired import PaymentOutcomeV1

# An approval is a payment whose hold was placed and then ended: captured
# (cleared), voided or expired; each such payment ends in exactly one of them.
# `authorized` is not counted: a manual capture would be counted twice (at its
# authorization and at its capture). `settled` follows `cleared`, `failed` is
# an error of ours, not a decision: neither is an approval or a refusal.
APPROVED_STATUSES = ("cleared", "voided", "expired")
REFUSED_STATUSES = ("rejected", "declined")
# Reasons ranked: those of refusals (risk's rejections, funds' declines).
REASON_STATUSES = REFUSED_STATUSES
# The money captured in a window: cleared outcomes' captured amounts.
VOLUME_STATUS = "cleared"
TOP_REASONS = 5
REASONS_KEPT_MAX = 64
RATE_DIGITS = 4

OutcomeEvent = PaymentOutcome | PaymentOutcomeV1 | PaymentRefunded
WindowValue = dict[str, dict[str, Any]]


class Fact(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the views keep of one outcome; the value of the views' internal topics.

    `at_s` is the outcome's `occurred_at` (event time, UTC epoch seconds): the
    time the payment reached `status`. A refund's `status` is
    `partially_refunded` or `refunded` and its amount the refund's.
    """

    merchant_id: str
    currency: str
    status: str
    amount_minor: int
    reasons: list[str]
    at_s: float


def fact_of(event: OutcomeEvent) -> Fact:
    """The fact of a decoded payment.outcome (v1 or v2) or payment.refunded."""
    if isinstance(event, PaymentRefunded):
        return Fact(
            merchant_id=event.merchant_id,
            currency=event.currency,
            status=event.status,
            amount_minor=event.amount_minor,
            reasons=[],
            at_s=event.occurred_at.timestamp(),
        )
    captured = event.captured_minor if isinstance(event, PaymentOutcome) else None
    return Fact(
        merchant_id=event.merchant_id,
        currency=event.currency,
        status=event.status,
        # A partial capture moved less than the payment's amount.
        amount_minor=event.amount_minor if captured is None else captured,
        reasons=list(event.reasons),
        at_s=event.occurred_at.timestamp(),
    )


def add_fact(value: Mapping[str, Any] | None, fact: Fact) -> WindowValue:
    """`value` with `fact` counted in its currency; a new value, `value` itself unchanged."""
    new: WindowValue = dict(value or {})
    old = new.get(fact.currency) or {}
    counts = dict(old.get("counts") or {})
    amounts = dict(old.get("amount_minor") or {})
    reasons = dict(old.get("reasons") or {})
    other = int(old.get("reasons_other") or 0)
    counts[fact.status] = counts.get(fact.status, 0) + 1
    amounts[fact.status] = amounts.get(fact.status, 0) + fact.amount_minor
    if fact.status in REASON_STATUSES:
        for reason in dict.fromkeys(reason_code(r) for r in fact.reasons):  # a code named twice counts once
            if reason in reasons or len(reasons) < REASONS_KEPT_MAX:
                reasons[reason] = reasons.get(reason, 0) + 1
            else:
                other += 1
    new[fact.currency] = {"counts": counts, "amount_minor": amounts, "reasons": reasons, "reasons_other": other}
    return new


def reason_code(reason: str) -> str:
    """The code of a `"<code>: <detail>"` reason (docs/reference/events.md); the whole text when it has none.

    Details carry amounts and ids ("txn_amount_limit: 240000 > 200000"): ranked
    as they are, one cause would be split into as many reasons as amounts.
    """
    code, _colon, _detail = reason.partition(":")
    return code.strip() or reason


def rank_reasons(reasons: Mapping[str, int], top: int = TOP_REASONS) -> list[dict[str, Any]]:
    """The `top` most frequent reasons, most frequent first; ties by reason, so the order is stable."""
    ranked = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))
    return [{"reason": reason, "count": count} for reason, count in ranked[:top]]


def approval(counts: Mapping[str, int]) -> dict[str, Any]:
    """Approved and refused payments of a window and the approval rate (None when there is neither)."""
    approved = sum(counts.get(status, 0) for status in APPROVED_STATUSES)
    refused = sum(counts.get(status, 0) for status in REFUSED_STATUSES)
    decided = approved + refused
    return {
        "approved": approved,
        "refused": refused,
        "rate": round(approved / decided, RATE_DIGITS) if decided else None,
    }


def show_currency(figures: Mapping[str, Any]) -> dict[str, Any]:
    counts: Mapping[str, int] = figures.get("counts") or {}
    amounts: Mapping[str, int] = figures.get("amount_minor") or {}
    return {
        "volume_minor": amounts.get(VOLUME_STATUS, 0),
        "counts": dict(sorted(counts.items())),
        "amount_minor": dict(sorted(amounts.items())),
        "approval": approval(counts),
        "top_reasons": rank_reasons(figures.get("reasons") or {}),
        "reasons_other": int(figures.get("reasons_other") or 0),
    }


def show_window(window: WindowRange, value: Mapping[str, Mapping[str, Any]] | None, now_s: float) -> dict[str, Any]:
    """One window as the web views answer it: its bounds, whether it has ended, figures per currency."""
    end_s = window_end_s(window)
    return {
        "start": _iso(window[0]),
        "end": _iso(end_s),
        "closed": now_s >= end_s,
        "currencies": {currency: show_currency(figures) for currency, figures in sorted((value or {}).items())},
    }


def show_windows(
    windows: Sequence[WindowRange], values: Sequence[Mapping[str, Mapping[str, Any]] | None], now_s: float
) -> list[dict[str, Any]]:
    return [show_window(window, value, now_s) for window, value in zip(windows, values, strict=True)]


def _iso(at_s: float) -> str:
    return datetime.fromtimestamp(round(at_s), UTC).isoformat().replace("+00:00", "Z")
