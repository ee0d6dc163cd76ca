"""The generator's payment lifecycle (the demo's manual captures and refunds): shares, plans, valid requests."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from paystream.demo_data import build_world
from paystream.generator import (
    CAPTURE_PLANS,
    EXPIRE_AFTER,
    GeneratedPayment,
    PaymentGenerator,
    SettledPayment,
    plan_refunds,
)
from schemas.accounts import REQUEST_TYPES, CaptureRequested, VoidRequested
from schemas.codec import Decoder, Invalid, encode
from schemas.payments import PaymentRequested

START = datetime(2026, 3, 1, 12, tzinfo=UTC)
SPACING = timedelta(milliseconds=1)
DECODER: Decoder[msgspec.Struct] = Decoder((PaymentRequested, *REQUEST_TYPES.values()))


def generated(count: int, manual_percent: float = 0.0, seed: int = 7) -> list[GeneratedPayment]:
    generator = PaymentGenerator(build_world(), seed, "run", manual_percent)
    return list(generator.generate(count, START, SPACING))


def valid(event: msgspec.Struct) -> None:
    """What the publisher checks before sending: the contract, decoded from the JSON it would send."""
    decoded = DECODER.decode(encode(event), START)
    assert not isinstance(decoded, Invalid), (event, decoded)


def test_manual_capture_changes_no_other_draw() -> None:
    plain = generated(2_000)
    lifecycle = generated(2_000, manual_percent=5.0)
    assert [g.kind for g in plain] == [g.kind for g in lifecycle]
    for before, after in zip(plain, lifecycle, strict=True):
        assert before.plan is None and before.requests == () and before.payment.capture == "automatic"
        unchanged = msgspec.structs.replace(after.payment, capture="automatic", capture_by=None, metadata={})
        assert unchanged == msgspec.structs.replace(before.payment, metadata={})


def test_a_share_of_the_ordinary_payments_is_manual_with_every_plan_in_rotation() -> None:
    items = generated(10_000, manual_percent=5.0)
    manual = [g for g in items if g.plan is not None]
    ordinary = sum(g.kind == "ordinary" for g in items)
    assert all(g.kind == "ordinary" and g.payment.capture == "manual" for g in manual)
    assert 0.04 * ordinary < len(manual) < 0.06 * ordinary
    assert [g.plan for g in manual] == [CAPTURE_PLANS[i % len(CAPTURE_PLANS)] for i in range(len(manual))]
    # Every ordinary payment manual: the rotation's first four are one of each.
    first = [g.plan for g in generated(40, manual_percent=100.0) if g.kind == "ordinary"][:4]
    assert first == ["capture_full", "capture_partial", "void", "expire"]
    assert Counter(g.plan for g in manual).keys() == set(CAPTURE_PLANS)


def test_each_plan_carries_the_request_that_carries_it_out() -> None:
    for item in generated(3_000, manual_percent=20.0):
        payment = item.payment
        valid(payment)
        if item.plan is None:
            continue
        assert payment.metadata["plan"] == item.plan
        for request in item.requests:
            valid(request)
            # On the payer's key, so funds decides it after the payment's hold.
            assert (request.account_id, request.payment_id) == (payment.payer_account, payment.payment_id)
        if item.plan == "expire":
            assert item.requests == () and payment.capture_by == payment.created_at + EXPIRE_AFTER
            continue
        assert payment.capture_by is None  # the default deadline: days away
        (request,) = item.requests
        if item.plan == "void":
            assert isinstance(request, VoidRequested)
            continue
        assert isinstance(request, CaptureRequested) and request.currency == payment.currency
        if item.plan == "capture_full":
            assert request.amount_minor == payment.amount_minor
        else:
            assert 0 < request.amount_minor < payment.amount_minor


def settled_payments(count: int) -> list[SettledPayment]:
    return [SettledPayment(f"pay-{i:04d}", f"payer-{i % 50:03d}", "EUR", 100 + 37 * i) for i in range(count)]


def test_refunds_are_partial_full_and_one_over_what_is_left() -> None:
    settled = settled_payments(500)
    by_id = {p.payment_id: p for p in settled}
    refunds = plan_refunds(settled, 2.0, 1, "run", START)
    assert refunds == plan_refunds(list(reversed(settled)), 2.0, 1, "run", START)  # deterministic
    assert len({r.request.payment_id for r in refunds}) == 10
    assert Counter(r.plan for r in refunds) == {"partial": 5, "full": 5, "over": 1}
    assert len({r.request.request_id for r in refunds}) == len(refunds)
    first, over = refunds[0], refunds[1]
    assert (first.plan, over.plan) == ("partial", "over")
    payment = by_id[over.request.payment_id]
    assert first.request.payment_id == payment.payment_id
    # One more than what the partial refund left: funds declines it (exceeds_refundable).
    assert over.request.amount_minor == payment.gross_minor - first.request.amount_minor + 1
    for refund in refunds:
        valid(refund.request)
        paid = by_id[refund.request.payment_id]
        assert (refund.request.account_id, refund.request.currency) == (paid.payer_account, paid.currency)
        if refund.plan == "full":
            assert refund.request.amount_minor == paid.gross_minor
        elif refund.plan == "partial":
            assert 0 < refund.request.amount_minor < paid.gross_minor


@pytest.mark.parametrize(("count", "percent", "expected"), [(0, 2.0, 0), (300, 0.0, 0), (1, 2.0, 2), (3, 100.0, 4)])
def test_refund_counts_at_the_edges(count: int, percent: float, expected: int) -> None:
    # At least one payment once there is a share and a payment; the first one also gets the over-refund.
    assert len(plan_refunds(settled_payments(count), percent, 1, "run", START)) == expected
