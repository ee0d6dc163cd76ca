"""The figures of a window: counting per currency, approval rate, reason ranking, and how a window is shown."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from paystream.views.aggregate import (
    REASONS_KEPT_MAX,
    Fact,
    add_fact,
    approval,
    fact_of,
    rank_reasons,
    reason_code,
    show_currency,
    show_window,
)
from paystream.views.windows import MINUTE_S, window_range
from schemas.payments import PaymentOutcome
from schemas.refunds import PaymentRefunded
from schemas.retired import PaymentOutcomeV1

NOON = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def fact(status: str, amount: int = 100, currency: str = "EUR", reasons: tuple[str, ...] = ()) -> Fact:
    return Fact(
        merchant_id="m1", currency=currency, status=status, amount_minor=amount, reasons=list(reasons), at_s=0.0
    )


def window_of(*facts: Fact) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for one in facts:
        value = add_fact(value, one)
    return value


# --- what an outcome adds -----------------------------------------------------------------------


def test_a_partial_capture_counts_what_was_captured_and_the_event_time_is_occurred_at() -> None:
    outcome = PaymentOutcome(
        event_id="p1:cleared",
        payment_id="p1",
        status="cleared",
        stage="clearing",
        reasons=[],
        payer_account="a1",
        merchant_id="m1",
        amount_minor=1_000,
        currency="EUR",
        created_at=NOON - timedelta(hours=2),
        occurred_at=NOON,
        captured_minor=600,
    )
    assert fact_of(outcome) == Fact(
        merchant_id="m1", currency="EUR", status="cleared", amount_minor=600, reasons=[], at_s=NOON.timestamp()
    )


def test_a_v1_outcome_and_a_refund_are_read_too() -> None:
    v1 = PaymentOutcomeV1(
        event_id="p2:declined",
        payment_id="p2",
        status="declined",
        stage="funds",
        reasons=["insufficient_funds"],
        payer_account="a1",
        merchant_id="m2",
        amount_minor=250,
        currency="JPY",
        created_at=NOON,
        occurred_at=NOON + timedelta(seconds=5),
    )
    assert fact_of(v1) == Fact(
        merchant_id="m2",
        currency="JPY",
        status="declined",
        amount_minor=250,
        reasons=["insufficient_funds"],
        at_s=NOON.timestamp() + 5,
    )
    refund = PaymentRefunded(
        event_id="p3:refund:r1",
        payment_id="p3",
        refund_id="r1",
        status="partially_refunded",
        payer_account="a1",
        merchant_id="m3",
        currency="USD",
        amount_minor=40,
        refunded_minor=40,
        captured_minor=100,
        reason="damaged",
        occurred_at=NOON,
    )
    assert fact_of(refund) == Fact(
        merchant_id="m3",
        currency="USD",
        status="partially_refunded",
        amount_minor=40,
        reasons=[],
        at_s=NOON.timestamp(),
    )


def test_currencies_are_never_added_together() -> None:
    value = window_of(fact("cleared", 100, "EUR"), fact("cleared", 7, "JPY"), fact("cleared", 50, "EUR"))
    assert value == {
        "EUR": {"counts": {"cleared": 2}, "amount_minor": {"cleared": 150}, "reasons": {}, "reasons_other": 0},
        "JPY": {"counts": {"cleared": 1}, "amount_minor": {"cleared": 7}, "reasons": {}, "reasons_other": 0},
    }


def test_adding_leaves_the_old_value_as_it_was() -> None:
    before = window_of(fact("declined", reasons=("insufficient_funds",)))
    kept = copy.deepcopy(before)
    after = add_fact(before, fact("declined", reasons=("insufficient_funds",)))
    assert before == kept
    assert after["EUR"]["reasons"] == {"insufficient_funds": 2}


def test_a_value_read_back_from_json_counts_on() -> None:
    # What a restarted worker holds: the changelog's JSON, decoded.
    restored = json.loads(json.dumps(window_of(fact("rejected", reasons=("velocity",)))))
    assert add_fact(restored, fact("rejected", reasons=("velocity",)))["EUR"]["reasons"] == {"velocity": 2}


def test_only_refusals_reasons_are_counted_and_a_repeated_reason_once() -> None:
    value = window_of(
        fact("rejected", reasons=("velocity", "velocity", "blocklist")),
        fact("failed", reasons=("clearing could not apply it",)),
        fact("voided", reasons=("customer",)),
    )
    assert value["EUR"]["reasons"] == {"velocity": 1, "blocklist": 1}


def test_reasons_are_counted_by_their_code() -> None:
    value = window_of(
        fact("rejected", reasons=("txn_amount_limit: 240000 > 200000", "blocked_country: demo: sanctioned country")),
        fact("rejected", reasons=("txn_amount_limit: 300000 > 200000",)),
        fact("declined", reasons=("insufficient_funds: available 10 < amount 500",)),
        fact("rejected", reasons=("payer_velocity_10m_count: 6 > 5", "payer_velocity_10m_count: 7 > 5")),
    )
    assert value["EUR"]["reasons"] == {
        "txn_amount_limit": 2,
        "blocked_country": 1,
        "insufficient_funds": 1,
        "payer_velocity_10m_count": 1,
    }
    assert [reason_code(r) for r in ("plain", " spaced : x", ": no code", "")] == ["plain", "spaced", ": no code", ""]


def test_reasons_are_bounded_per_window_and_currency() -> None:
    facts = [fact("declined", reasons=(f"r{i:03}",)) for i in range(REASONS_KEPT_MAX + 3)]
    value = window_of(*facts, fact("declined", reasons=("r000",)))
    figures = value["EUR"]
    assert len(figures["reasons"]) == REASONS_KEPT_MAX
    assert figures["reasons_other"] == 3
    assert figures["reasons"]["r000"] == 2  # a kept reason still counts after the cap is reached


# --- approval and ranking -----------------------------------------------------------------------


def test_approval_counts_ended_holds_against_refusals() -> None:
    counts = {"cleared": 3, "voided": 1, "expired": 1, "rejected": 2, "declined": 3, "authorized": 4, "settled": 3}
    assert approval(counts) == {"approved": 5, "refused": 5, "rate": 0.5}
    assert approval({"failed": 2, "settled": 1, "authorized": 1}) == {"approved": 0, "refused": 0, "rate": None}
    assert approval({"cleared": 2, "declined": 1}) == {"approved": 2, "refused": 1, "rate": 0.6667}


def test_reasons_rank_by_count_then_by_name_top_five() -> None:
    reasons = {"e": 1, "d": 4, "c": 4, "b": 2, "a": 1, "f": 9, "g": 1}
    assert rank_reasons(reasons) == [
        {"reason": "f", "count": 9},
        {"reason": "c", "count": 4},
        {"reason": "d", "count": 4},
        {"reason": "b", "count": 2},
        {"reason": "a", "count": 1},
    ]
    assert rank_reasons({}) == []
    assert rank_reasons(reasons, top=1) == [{"reason": "f", "count": 9}]


# --- showing a window ---------------------------------------------------------------------------


def test_a_currency_shows_volume_counts_approval_and_top_reasons() -> None:
    value = window_of(
        fact("cleared", 600),
        fact("settled", 600),
        fact("declined", 300, reasons=("insufficient_funds",)),
        fact("rejected", 200, reasons=("velocity", "blocklist")),
    )
    assert show_currency(value["EUR"]) == {
        "volume_minor": 600,
        "counts": {"cleared": 1, "declined": 1, "rejected": 1, "settled": 1},
        "amount_minor": {"cleared": 600, "declined": 300, "rejected": 200, "settled": 600},
        "approval": {"approved": 1, "refused": 2, "rate": 0.3333},
        "top_reasons": [
            {"reason": "blocklist", "count": 1},
            {"reason": "insufficient_funds", "count": 1},
            {"reason": "velocity", "count": 1},
        ],
        "reasons_other": 0,
    }


@pytest.mark.parametrize(("now_offset_s", "closed"), [(59.9, False), (60.0, True), (3_000.0, True)])
def test_a_window_is_closed_once_its_end_has_passed(now_offset_s: float, closed: bool) -> None:
    start = NOON.timestamp()
    shown = show_window(window_range(start, MINUTE_S), None, start + now_offset_s)
    assert shown == {"start": "2026-03-01T12:00:00Z", "end": "2026-03-01T12:01:00Z", "closed": closed, "currencies": {}}


def test_currencies_are_shown_in_code_order() -> None:
    value = window_of(fact("cleared", currency="USD"), fact("cleared", currency="EUR"), fact("cleared", currency="JPY"))
    shown = show_window(window_range(NOON.timestamp(), MINUTE_S), value, NOON.timestamp())
    assert list(shown["currencies"]) == ["EUR", "JPY", "USD"]
