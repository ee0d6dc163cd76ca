"""Hold decisions: available never goes negative, payments of a payer are taken in order."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.payments import PaymentRequested
from workers.account_rules import AccountState
from workers.funds_store import HoldDecision, decide_holds

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


@settings(derandomize=True, max_examples=100, deadline=None)
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


# -- several payers and currencies, interleaved, with holds already open ----------------------------------

PROPERTY = settings(derandomize=True, max_examples=100, deadline=None)
CURRENCIES = ("EUR", "JPY", "USD")


@dataclass(frozen=True, slots=True)
class Opening:
    """An account as the funds stage finds it: some closed, some with holds already open."""

    account_id: str
    currency: str
    status: str
    balance: int
    held: int


@st.composite
def openings(draw: st.DrawFn) -> list[Opening]:
    count = draw(st.integers(min_value=1, max_value=6))
    result = []
    for index in range(count):
        balance = draw(st.integers(min_value=0, max_value=50_000))
        result.append(
            Opening(
                account_id=f"payer-{index}",
                currency=draw(st.sampled_from(CURRENCIES)),
                status=draw(st.sampled_from(("open", "open", "open", "closed"))),
                balance=balance,
                held=draw(st.integers(min_value=0, max_value=balance)),  # available >= 0, as the database keeps it
            )
        )
    return result


@st.composite
def interleaved(draw: st.DrawFn) -> tuple[list[Opening], list[PaymentRequested]]:
    """Accounts and a sequence of payments that interleaves payers and currencies."""
    opened = draw(openings())
    by_id = {o.account_id: o for o in opened}
    payers = [*by_id, "ghost-1"]  # and a payer with no account
    # What is left on each account, roughly tracked so that some amounts hit it exactly (or by one more).
    room = {o.account_id: o.balance - o.held for o in opened}
    payments = []
    for n in range(draw(st.integers(min_value=0, max_value=40))):
        payer = draw(st.sampled_from(payers))
        own = by_id[payer].currency if payer in by_id else "EUR"
        # Mostly the account's own currency, so most payments are decided on funds.
        currency = draw(st.one_of(st.just(own), st.just(own), st.just(own), st.sampled_from(CURRENCIES)))
        left = room.get(payer, 0)
        amount = draw(
            st.one_of(
                st.integers(min_value=1, max_value=20_000),
                st.just(max(left, 1)),  # exactly the rest of the available amount
                st.just(left + 1),  # one unit too much
            )
        )
        if payer in room and amount <= left:
            room[payer] = left - amount
        payments.append(payment(n, amount, payer, currency))
    return opened, payments


def account_states(opened: list[Opening]) -> dict[str, AccountState]:
    return {o.account_id: AccountState(o.account_id, o.currency, o.status, o.balance, o.held) for o in opened}


def expected_decisions(opened: list[Opening], payments: list[PaymentRequested]) -> list[tuple[str, bool, str]]:
    """(payment id, held, reason kind) from a model of its own: it tracks available, not held."""
    by_id = {o.account_id: o for o in opened}
    available = {o.account_id: o.balance - o.held for o in opened}
    result = []
    for p in payments:
        account = by_id.get(p.payer_account)
        if account is None:
            kind = "unknown_account"
        elif account.status != "open":
            kind = "account_closed"
        elif account.currency != p.currency:
            kind = "currency_mismatch"
        elif available[account.account_id] - p.amount_minor < 0:
            kind = "insufficient_funds"
        else:
            kind = ""
            available[account.account_id] -= p.amount_minor
        result.append((p.payment_id, kind == "", kind))
    return result


def summary(decisions: list[HoldDecision]) -> list[tuple[str, bool, str]]:
    return [(d.payment_id, d.held, d.reasons[0].split(":")[0] if d.reasons else "") for d in decisions]


@PROPERTY
@given(interleaved())
def test_interleaved_payers_and_currencies(case: tuple[list[Opening], list[PaymentRequested]]) -> None:
    opened, payments = case
    state = account_states(opened)
    decisions = decide_holds(payments, state, NOW)

    # Held iff open, same currency and available covered the amount at its turn (an independent model).
    assert summary(decisions) == expected_decisions(opened, payments)
    assert all(d.decided_at == NOW for d in decisions)
    assert all(d.held == (d.reasons == ()) for d in decisions)

    for o in opened:
        account = state[o.account_id]
        placed = sum(
            p.amount_minor
            for p, d in zip(payments, decisions, strict=True)
            if d.held and p.payer_account == o.account_id
        )
        # Final held = opening held + the holds placed; the balance is not touched.
        assert account.held_minor == o.held + placed
        assert account.balance_minor == o.balance
        # Held only grows, so available is smallest at the end: never negative at any point.
        assert account.available_minor >= 0
    assert set(state) == {o.account_id for o in opened}  # no account made up for the unknown payer


@PROPERTY
@given(interleaved())
def test_payers_are_independent(case: tuple[list[Opening], list[PaymentRequested]]) -> None:
    opened, payments = case
    together_state = account_states(opened)
    together = {d.payment_id: d for d in decide_holds(payments, together_state, NOW)}
    for payer in {p.payer_account for p in payments}:
        own = [p for p in payments if p.payer_account == payer]
        alone_state = account_states(opened)
        alone = decide_holds(own, alone_state, NOW)
        assert alone == [together[p.payment_id] for p in own]
        assert alone_state.get(payer) == together_state.get(payer)
