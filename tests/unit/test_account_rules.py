"""Funds' decisions on one account: deposits, withdrawals, holds, opening and closing, in input order."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from schemas.accounts import (
    AccountCloseRequested,
    AccountOpenRequested,
    DepositRequested,
    WithdrawalRequested,
)
from schemas.codec import Decoder, Invalid, encode
from schemas.payments import PaymentRequested
from workers.account_rules import BALANCE_MAX_MINOR, AccountState, decide_account_request, hold_refusal

AT = datetime(2026, 3, 1, tzinfo=UTC)
ACCOUNT = "acct-1"


def deposit(n: int, amount: int, currency: Any = "EUR", account: str = ACCOUNT) -> DepositRequested:
    return DepositRequested(request_id=f"d{n}", account_id=account, amount_minor=amount, currency=currency,
                            source_ref="ref", created_at=AT)  # fmt: skip


def withdrawal(n: int, amount: int, currency: Any = "EUR") -> WithdrawalRequested:
    return WithdrawalRequested(request_id=f"w{n}", account_id=ACCOUNT, amount_minor=amount, currency=currency,
                               destination_ref="ref", created_at=AT)  # fmt: skip


def payment(n: int, amount: int) -> PaymentRequested:
    return PaymentRequested(payment_id=f"p{n}", payer_account=ACCOUNT, merchant_id="m", amount_minor=amount,
                            currency="EUR", country="DE", method="card", created_at=AT)  # fmt: skip


def opened() -> dict[str, AccountState]:
    accounts: dict[str, AccountState] = {}
    decision = decide_account_request(
        AccountOpenRequested(request_id="o", account_id=ACCOUNT, owner_id="me", currency="EUR", created_at=AT),
        accounts,
        AT,
    )
    assert decision.succeeded and accounts[ACCOUNT].opened_now
    return accounts


def reason_code(reasons: tuple[str, ...]) -> str:
    return reasons[0].split(":")[0] if reasons else ""


operations = st.lists(
    st.tuples(st.sampled_from(["deposit", "withdrawal", "payment"]), st.integers(1, 10**6)), max_size=40
)


@given(operations)
def test_in_any_order_available_never_goes_negative_and_the_balance_is_what_moved(ops: list[tuple[str, int]]) -> None:
    accounts = opened()
    deposited = withdrawn = held = 0
    for n, (kind, amount) in enumerate(ops):
        before = accounts[ACCOUNT].available_minor
        if kind == "payment":
            refusal = hold_refusal(payment(n, amount), accounts)
            assert (refusal is None) == (amount <= before)
            held += amount if refusal is None else 0
            continue
        request = deposit(n, amount) if kind == "deposit" else withdrawal(n, amount)
        decision = decide_account_request(request, accounts, AT)
        if kind == "deposit":
            assert decision.succeeded
            deposited += amount
        else:
            assert decision.succeeded == (amount <= before)
            if decision.succeeded:
                withdrawn += amount
            else:
                assert reason_code(decision.reasons) == "insufficient_funds"
        # Money moves only with a balanced journal, and only when the request succeeded.
        assert (decision.journal is not None) == decision.succeeded
        if decision.journal is not None:
            assert sum(amount for _, amount in decision.journal.legs) == 0
            assert dict(decision.journal.legs)[ACCOUNT] == (amount if kind == "deposit" else -amount)
        assert accounts[ACCOUNT].available_minor >= 0
    state = accounts[ACCOUNT]
    assert (state.balance_minor, state.held_minor) == (deposited - withdrawn, held)


def test_requests_on_an_account_that_cannot_take_them_are_declined_with_the_reason() -> None:
    accounts = opened()
    accounts["platform:funding:EUR"] = AccountState("platform:funding:EUR", "EUR", "open", 0, 0, kind="funding")
    cases = [
        (deposit(1, 5, account="nobody"), "unknown_account"),
        (deposit(2, 5, currency="USD"), "currency_mismatch"),
        (deposit(3, 5, account="platform:funding:EUR"), "not_a_customer_account"),
        (withdrawal(4, 1), "insufficient_funds"),
        (AccountOpenRequested(request_id="o2", account_id=ACCOUNT, owner_id="x", currency="EUR", created_at=AT),
         "account_exists"),
        (AccountOpenRequested(request_id="o3", account_id="platform:funding:EUR", owner_id="x", currency="EUR",
                              created_at=AT), "account_exists"),
    ]  # fmt: skip
    for request, code in cases:
        decision = decide_account_request(request, accounts, AT)
        assert (decision.succeeded, reason_code(decision.reasons)) == (False, code), request
    assert (accounts[ACCOUNT].balance_minor, accounts[ACCOUNT].held_minor) == (0, 0)


def test_a_close_waits_for_an_empty_account_and_then_nothing_more_is_taken() -> None:
    accounts = opened()
    decide_account_request(deposit(1, 100), accounts, AT)
    close = AccountCloseRequested(request_id="c1", account_id=ACCOUNT, created_at=AT)
    first = decide_account_request(close, accounts, AT)
    assert (first.succeeded, reason_code(first.reasons)) == (False, "account_not_empty")
    assert hold_refusal(payment(1, 60), accounts) is None
    decide_account_request(withdrawal(2, 40), accounts, AT)
    held = decide_account_request(close, accounts, AT)
    assert (held.succeeded, reason_code(held.reasons)) == (False, "account_not_empty")  # 60 still held
    accounts[ACCOUNT].held_minor = 0
    accounts[ACCOUNT].balance_minor = 0  # the payment was captured
    assert decide_account_request(close, accounts, AT).succeeded
    assert accounts[ACCOUNT].status == "closed"
    assert reason_code(decide_account_request(deposit(3, 1), accounts, AT).reasons) == "account_closed"
    assert (hold_refusal(payment(2, 1), accounts) or "").startswith("account_closed")


def test_a_deposit_that_would_pass_the_balance_bound_is_declined_not_overflowed() -> None:
    accounts = opened()
    accounts[ACCOUNT].balance_minor = BALANCE_MAX_MINOR - 5
    decision = decide_account_request(deposit(1, 6), accounts, AT)
    assert (decision.succeeded, reason_code(decision.reasons)) == (False, "balance_limit")
    assert decide_account_request(deposit(2, 5), accounts, AT).succeeded


# --- one topic, several contracts: the decoder picks by `schema` --------------------------------

REQUEST_TOPIC = Decoder((PaymentRequested, DepositRequested, WithdrawalRequested))


def test_the_schema_field_picks_the_contract_and_a_missing_one_means_a_payment() -> None:
    assert isinstance(REQUEST_TOPIC.decode(encode(deposit(1, 5))), DepositRequested)
    assert isinstance(REQUEST_TOPIC.decode(encode(withdrawal(1, 5))), WithdrawalRequested)
    document = encode(payment(1, 5)).replace(b'"schema":"payment.requested",', b"")
    assert b'"schema"' not in document
    assert isinstance(REQUEST_TOPIC.decode(document), PaymentRequested)


def test_an_unknown_schema_or_a_mixed_document_is_refused_with_field_and_rule() -> None:
    unknown = REQUEST_TOPIC.decode(encode(deposit(1, 5)).replace(b"deposit.requested", b"refund.requested"))
    assert isinstance(unknown, Invalid) and (unknown.field, unknown.rule) == ("schema", "schema")
    assert "refund.requested" in unknown.detail and "deposit.requested" in unknown.detail
    # A deposit carrying a payment's field: strict, like every contract.
    mixed = REQUEST_TOPIC.decode(encode(deposit(1, 5))[:-1] + b',"merchant_id":"m"}')
    assert isinstance(mixed, Invalid) and (mixed.field, mixed.rule) == ("merchant_id", "unknown_field")
    zero = REQUEST_TOPIC.decode(encode(deposit(1, 5)).replace(b'"amount_minor":5', b'"amount_minor":0'))
    assert isinstance(zero, Invalid) and (zero.field, zero.rule) == ("amount_minor", "range")
    # `schema` not a string: the first contract's decoder names the problem.
    odd = REQUEST_TOPIC.decode(b'{"schema": 5}')
    assert isinstance(odd, Invalid) and odd.field == "schema"
