"""Id rewriting: deterministic per file and salt, valid ids, only valid payments touched."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from paystream.errors import PaystreamError
from paystream.replay.rewrite import IdRewriter, check_salt, derived_payment_id, new_salt
from schemas.codec import Decoder, encode
from schemas.payments import PaymentRequested
from tests.support.pipeline import generate

ID_TEXT = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}\Z")  # schemas.payments.IdText
NOW = datetime(2026, 3, 1, 12, 0, 0, 123_000, tzinfo=UTC)
DECODER = Decoder(PaymentRequested)


@given(salt=st.from_regex(r"\A[A-Za-z0-9_.-]{1,64}\Z"), payment_id=st.text(min_size=1, max_size=64))
def test_derived_ids_are_valid_and_deterministic(salt: str, payment_id: str) -> None:
    derived = derived_payment_id(salt, payment_id)
    assert ID_TEXT.match(derived)
    assert derived == derived_payment_id(salt, payment_id)
    assert derived != derived_payment_id(salt + "x", payment_id)
    assert derived != derived_payment_id(salt, payment_id + "x")


def test_derived_id_is_fixed_by_salt_and_recorded_id() -> None:
    # Pinned: the same file and salt must give the same ids after an upgrade too.
    assert derived_payment_id("demo", "pay-1") == "rp-c1eb6c54c4ac91c9320604f4"


def test_each_run_gets_its_own_salt() -> None:
    salts = {new_salt() for _ in range(20)}
    assert len(salts) == 20
    assert all(check_salt(salt) == salt for salt in salts)


@pytest.mark.parametrize("salt", ["", "has space", "x" * 65, "é"])
def test_a_bad_salt_is_refused(salt: str) -> None:
    with pytest.raises(PaystreamError, match="--id-salt"):
        check_salt(salt)


def test_valid_payments_get_a_new_id_and_created_at_and_nothing_else_changes() -> None:
    rewriter = IdRewriter("s1", 64 * 1024)
    originals = [g.payment for g in generate(20, "orig")]
    for original in originals:
        rewritten = DECODER.decode(rewriter.rewrite(encode(original), NOW))
        assert isinstance(rewritten, PaymentRequested)
        assert rewritten.payment_id == derived_payment_id("s1", original.payment_id)
        assert rewritten.created_at == NOW
        assert msgspec.structs.replace(rewritten, payment_id=original.payment_id, created_at=original.created_at) == (
            original
        )
    assert (rewriter.rewritten, rewriter.untouched) == (20, 0)


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"\x00\x01garbage",
        b'{"payment_id": "cut',
        b'{"schema":"payment.requested","v":1,"payment_id":"neg","payer_account":"p","merchant_id":"m",'
        b'"amount_minor":-1,"currency":"EUR","country":"DE","method":"card","created_at":"2026-01-01T00:00:00Z"}',
    ],
)
def test_invalid_values_are_left_untouched_and_counted(value: bytes | None) -> None:
    rewriter = IdRewriter("s1", 64 * 1024)
    assert rewriter.rewrite(value, NOW) is value
    assert (rewriter.rewritten, rewriter.untouched) == (0, 1)


def test_one_recorded_payment_sent_twice_stays_one_payment() -> None:
    rewriter = IdRewriter("s1", 64 * 1024, track_ids=True)
    payment = generate(1, "orig")[0].payment
    first = rewriter.rewrite(encode(payment), NOW)
    second = rewriter.rewrite(encode(payment), NOW)
    assert first == second
    assert rewriter.rewritten == 2
    assert rewriter.ids == {derived_payment_id("s1", payment.payment_id)}
