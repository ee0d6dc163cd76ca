"""Hold decisions: available never goes negative, payments of a payer are taken in order."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from schemas.payments import PaymentRequested
from workers.funds import AccountState, decide_holds

NOW = datetime(2026, 11, 24, tzinfo=UTC)


def payment(n: int, amount: int, payer: str = "payer-1", currency: str = "EUR") -> PaymentRequested:
    return PaymentRequested(
        payment_id=f"p-{n}",
        payer_account=payer,
        merchant_id="m-1",
        amount_minor=amount,
        currency=currency,  # type: ignore[arg-type]
        country="DE",
        method="card",
        created_at=NOW,
    )


def accounts(balance: int = 1_000, held: int = 0, status: str = "open") -> dict[str, AccountState]:
    return {"payer-1": AccountState("payer-1", "EUR", status, balance, held)}


def test_hold_until_available_runs_out() -> None:
    state = accounts(balance=1_000, held=200)
    decisions = decide_holds([payment(1, 500), payment(2, 400), payment(3, 200)], state, NOW)
    assert [d.held for d in decisions] == [True, False, True]
    assert decisions[1].reasons[0].startswith("insufficient_funds: available 300 < amount 400")
    assert state["payer-1"].held_minor == 900


def test_each_decline_reason() -> None:
    assert decide_holds([payment(1, 1, payer="ghost")], accounts(), NOW)[0].reasons[0].startswith("unknown_account")
    assert decide_holds([payment(1, 1)], accounts(status="closed"), NOW)[0].reasons[0].startswith("account_closed")
    mismatch = decide_holds([payment(1, 1, currency="USD")], accounts(), NOW)[0]
    assert mismatch.reasons[0].startswith("currency_mismatch")


@given(st.integers(0, 10**9), st.lists(st.integers(1, 10**8), max_size=40))
def test_available_never_negative(balance: int, amounts: list[int]) -> None:
    state = accounts(balance=balance)
    decisions = decide_holds([payment(i, a) for i, a in enumerate(amounts)], state, NOW)
    held_total = sum(a for a, d in zip(amounts, decisions, strict=True) if d.held)
    assert state["payer-1"].held_minor == held_total
    assert state["payer-1"].available_minor >= 0
    # A declined payment really did not fit at its turn.
    running = 0
    for amount, decision in zip(amounts, decisions, strict=True):
        assert decision.held == (running + amount <= balance)
        running += amount if decision.held else 0
