"""The funds stage's decisions on one account, as pure functions over its locked state.

Payments' holds and account requests (open, close, deposit, withdrawal) of
one account are decided here one after the other, in input order, against the
same `AccountState`: a deposit published before a payment is counted before
that payment's hold, and a withdrawal and a payment that together exceed the
balance cannot both pass (whichever comes second is declined).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from paystream.ledger import Journal, funding_account, journal, payout_clearing_account
from schemas.accounts import (
    AccountCloseRequested,
    AccountOpenRequested,
    AccountRequest,
    CaptureRequested,
    DepositRequested,
    VoidRequested,
    WithdrawalRequested,
    journal_id_for,
    request_kind,
)
from schemas.payments import PaymentRequested
from schemas.refunds import RefundRequested
from workers.capture_rules import HoldState, capture_refusal, void_refusal
from workers.refund_rules import PaymentState, refund_refusal

# A customer balance stays far inside bigint whatever upstream deposits: a
# deposit that would pass this is declined (`balance_limit`), never an overflow.
BALANCE_MAX_MINOR = 2**62


@dataclass(slots=True)
class AccountState:
    """A customer account as the batch sees it; `kind` other than customer is never changed."""

    account_id: str
    currency: str
    status: str
    balance_minor: int
    held_minor: int
    kind: str = "customer"
    owner_id: str = ""
    opened_now: bool = False

    @property
    def available_minor(self) -> int:
        return self.balance_minor - self.held_minor


@dataclass(frozen=True, slots=True)
class AccountDecision:
    """What funds did with one account request; `journal` is set when money moved."""

    kind: str
    request_id: str
    account_id: str
    succeeded: bool
    reasons: tuple[str, ...]
    amount_minor: int | None
    currency: str | None
    journal_id: str | None
    decided_at: datetime
    journal: Journal | None = None
    # Captures, voids and refunds: the payment they act on.
    payment_id: str | None = None
    # Refunds: the fee the platform gives back, and the payment's total refunded after this one.
    fee_back_minor: int | None = None
    refunded_after_minor: int | None = None


def hold_refusal(payment: PaymentRequested, accounts: dict[str, AccountState]) -> str | None:
    """Why the payment cannot be held (None: hold it, and `held_minor` has grown by its amount)."""
    account = accounts.get(payment.payer_account)
    reason = _usable(account, payment.payer_account, payment.currency)
    if reason is None:
        assert account is not None
        if account.available_minor < payment.amount_minor:
            reason = f"insufficient_funds: available {account.available_minor} < amount {payment.amount_minor}"
        else:
            account.held_minor += payment.amount_minor
    return reason


def decide_account_request(
    request: AccountRequest,
    accounts: dict[str, AccountState],
    now: datetime,
    holds: dict[str, HoldState] | None = None,
    payments: dict[str, PaymentState] | None = None,
) -> AccountDecision:
    """Apply one request to `accounts` (a capture or void to its hold in `holds`, a refund to its payment in
    `payments`) and say what happened."""
    kind = request_kind(request)
    if isinstance(request, CaptureRequested | VoidRequested):
        return _decide_on_hold(request, accounts, now, holds or {})
    if isinstance(request, RefundRequested):
        return _decide_refund(request, accounts, now, payments or {})
    account = accounts.get(request.account_id)
    reason: str | None
    posted: Journal | None = None
    amount: int | None = None
    currency: str | None = account.currency if account is not None else None
    if isinstance(request, AccountOpenRequested):
        currency = request.currency
        if account is not None:
            reason = f"account_exists: {request.account_id} already exists ({account.kind}, {account.status})"
        else:
            reason = None
            accounts[request.account_id] = AccountState(
                request.account_id, request.currency, "open", 0, 0, owner_id=request.owner_id, opened_now=True
            )
    elif isinstance(request, AccountCloseRequested):
        reason = _usable(account, request.account_id, None)
        if reason is None:
            assert account is not None
            if account.balance_minor != 0 or account.held_minor != 0:
                reason = (
                    f"account_not_empty: balance {account.balance_minor}, held {account.held_minor};"
                    " withdraw the balance and let the holds end first"
                )
            else:
                account.status = "closed"
    else:
        amount, currency = request.amount_minor, request.currency
        reason = _usable(account, request.account_id, request.currency)
        if reason is None:
            assert account is not None
            reason = _move(request, account)
            if reason is None:
                posted = _journal(request)
    return AccountDecision(
        kind,
        request.request_id,
        request.account_id,
        reason is None,
        (reason,) if reason else (),
        amount,
        currency,
        posted.journal_id if posted else None,
        now,
        posted,
    )


def _decide_on_hold(
    request: CaptureRequested | VoidRequested,
    accounts: dict[str, AccountState],
    now: datetime,
    holds: dict[str, HoldState],
) -> AccountDecision:
    hold = holds.get(request.payment_id)
    amount: int | None
    currency: str | None
    if isinstance(request, CaptureRequested):
        reason = capture_refusal(request, hold, now)
        amount, currency = request.amount_minor, request.currency
    else:
        reason = void_refusal(request, hold, accounts, now)
        amount = hold.amount_minor if hold is not None and reason is None else None
        currency = hold.currency if hold is not None else None
    return AccountDecision(
        request_kind(request),
        request.request_id,
        request.account_id,
        reason is None,
        (reason,) if reason else (),
        amount,
        currency,
        None,
        now,
        payment_id=request.payment_id,
    )


def _decide_refund(
    request: RefundRequested, accounts: dict[str, AccountState], now: datetime, payments: dict[str, PaymentState]
) -> AccountDecision:
    payment = payments.get(request.payment_id)
    reason, split, posted = refund_refusal(request, payment, accounts)
    return AccountDecision(
        "refund",
        request.request_id,
        request.account_id,
        reason is None,
        (reason,) if reason else (),
        request.amount_minor,
        request.currency,
        posted.journal_id if posted else None,
        now,
        posted,
        payment_id=request.payment_id,
        fee_back_minor=split.fee_back_minor if split else None,
        refunded_after_minor=payment.refunded_minor if payment is not None and split else None,
    )


def _usable(account: AccountState | None, account_id: str, currency: str | None) -> str | None:
    if account is None:
        return f"unknown_account: {account_id} does not exist"
    if account.kind != "customer":
        return f"not_a_customer_account: {account_id} is a {account.kind} account"
    if account.status != "open":
        return f"account_closed: {account_id} is {account.status}"
    if currency is not None and account.currency != currency:
        return f"currency_mismatch: account holds {account.currency}, request is {currency}"
    return None


def _move(request: DepositRequested | WithdrawalRequested, account: AccountState) -> str | None:
    if isinstance(request, DepositRequested):
        if account.balance_minor + request.amount_minor > BALANCE_MAX_MINOR:
            return f"balance_limit: balance {account.balance_minor} + {request.amount_minor} > {BALANCE_MAX_MINOR}"
        account.balance_minor += request.amount_minor
        return None
    if account.available_minor < request.amount_minor:
        return f"insufficient_funds: available {account.available_minor} < amount {request.amount_minor}"
    account.balance_minor -= request.amount_minor
    return None


def _journal(request: DepositRequested | WithdrawalRequested) -> Journal:
    kind = request_kind(request)
    amount, currency = request.amount_minor, request.currency
    if isinstance(request, DepositRequested):
        # From outside: the funding account goes negative by what came in.
        legs = [(funding_account(currency), -amount), (request.account_id, amount)]
    else:
        # Out: the payout-clearing account holds it until the payout rail settles.
        legs = [(request.account_id, -amount), (payout_clearing_account(currency), amount)]
    return journal(journal_id_for(kind, request.request_id), kind, currency, legs, request_id=request.request_id)
