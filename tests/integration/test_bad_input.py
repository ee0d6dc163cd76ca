"""Bad input survives: each kind lands in the dead letters with the field and rule; nothing stalls."""

from __future__ import annotations

import pytest

from paystream.db.pool import connect
from paystream.prepare import drop_database
from paystream.settings import Settings
from tests.support.pipeline import drain, fresh_environment, generate, publish, wait_terminal

pytestmark = pytest.mark.integration

GOOD = (
    b'{"schema":"payment.requested","v":1,"payment_id":"ID","payer_account":"payer-000001",'
    b'"merchant_id":"merchant-000","amount_minor":AMOUNT,"currency":"CUR","country":"DE","method":"card",'
    b'"created_at":"2026-01-01T00:00:00Z"}'
)


def variant(payment_id: str, amount: bytes = b"500", currency: bytes = b"EUR") -> bytes:
    return GOOD.replace(b"ID", payment_id.encode()).replace(b"AMOUNT", amount).replace(b"CUR", currency)


BAD_INPUT: dict[str, tuple[bytes, str, str]] = {
    "garbage bytes": (b"\x8f\x00\xffnot json", "$", "json"),
    "truncated json": (variant("trunc")[:60], "$", "json"),
    "wrong type": (variant("wrongtype", amount=b'"500"'), "amount_minor", "type"),
    "unknown currency": (variant("unknowncur", currency=b"XTS"), "currency", "enum"),
    "zero amount": (variant("zero", amount=b"0"), "amount_minor", "range"),
    "negative amount": (variant("negative", amount=b"-100"), "amount_minor", "range"),
    "overflowing amount": (variant("overflow", amount=b"99999999999999999999999"), "amount_minor", "range"),
    "missing field": (variant("missing").replace(b'"country":"DE",', b""), "country", "required"),
    "unknown schema version": (variant("v9").replace(b'"v":1', b'"v":9'), "v", "enum"),
    "oversized payload": (
        variant("huge").replace(b'"card",', b'"card","metadata":{"blob":"' + b"x" * 70_000 + b'"},'),
        "$",
        "size",
    ),
    "unknown field": (
        variant("extra").replace(b'"card",', b'"card","color":"red",'),
        "color",
        "unknown_field",
    ),
}


@pytest.fixture(scope="module")
async def environment() -> Settings:
    settings = await fresh_environment("bad")
    yield settings
    await drop_database(settings)


async def test_each_bad_input_is_dead_lettered_and_the_rest_flows(environment: Settings) -> None:
    before = generate(50, f"{environment.namespace.rstrip('.')}-a", seed=5)
    after = generate(50, f"{environment.namespace.rstrip('.')}-b", seed=6)
    # Bad records between good ones, all keyed like a real payer: same partitions, no stall allowed.
    await publish(environment, before, raw=[raw for raw, _, _ in BAD_INPUT.values()])
    await publish(environment, after)
    await drain(environment)
    ids = [g.payment.payment_id for g in before + after]
    statuses = await wait_terminal(environment, ids)
    assert len(statuses) == len(ids)
    assert set(statuses.values()) <= {"rejected", "declined", "settled"}

    connection = await connect(environment)
    try:
        rows = await connection.fetch("SELECT field, rule, raw, detail FROM dead_letters WHERE stage = 'risk'")
    finally:
        await connection.close()
    found = {bytes(row["raw"]): (row["field"], row["rule"]) for row in rows}
    for name, (raw, field, rule) in BAD_INPUT.items():
        assert found.get(raw) == (field, rule), name
    assert all(row["detail"] for row in rows)


async def test_unknown_payer_account_is_declined_with_reason(environment: Settings) -> None:
    ghost = generate(1, f"{environment.namespace.rstrip('.')}-g", seed=9)
    payment = ghost[0].payment
    from msgspec import structs

    ghost_payment = structs.replace(payment, payer_account="no-such-account")
    from paystream.generator import GeneratedPayment

    await publish(environment, [GeneratedPayment("unknown_account", ghost_payment)])
    await drain(environment, idle_exit_ms=3_000)
    statuses = await wait_terminal(environment, [payment.payment_id], timeout_s=30)
    assert statuses[payment.payment_id] in ("declined", "rejected")
    connection = await connect(environment)
    try:
        reasons = await connection.fetchval(
            "SELECT risk_reasons || decline_reasons FROM payments WHERE payment_id = $1", payment.payment_id
        )
    finally:
        await connection.close()
    assert any(r.startswith(("unknown_account", "merchant_not_accepting", "blocked")) for r in reasons), reasons
