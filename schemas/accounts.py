"""Account events: what upstream publishes to open, fund, pay out and close a customer account.

They travel on the payer-keyed request topic (`payments.requested`, key = the
account id) with the payments of that account, so the stages see one
account's deposits, withdrawals and payments in the order they were published
(docs/design-decisions.md §13). `schema` tells them apart; a document without
one is a payment request, as before.

`request_id` is the upstream idempotency key, one namespace per request kind:
publishing the same request twice is answered like publishing it once, and the
same key with a different account, amount, currency or reference is refused
as a conflict. `created_at` and `metadata` are not part of that identity (an
upstream retry may stamp a new time).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from schemas.money import CurrencyCode, PositiveAmountMinor
from schemas.payments import Event, IdText, MetadataMap, Reasons, RefText, UtcTime

# A reference into a system outside paystream (a bank transfer id, an IBAN, a
# card funding reference): printable, no control characters.
ExternalRef = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[!-~]+( [!-~]+)*\Z")]

AccountRequestKind = Literal["account.open", "account.close", "deposit", "withdrawal", "capture", "void", "refund"]


class AccountOpenRequested(Event, frozen=True, kw_only=True):
    """Open a customer account holding one currency; it starts empty and open."""

    schema: Literal["account.open.requested"] = "account.open.requested"
    v: Literal[1] = 1
    request_id: IdText
    account_id: IdText
    owner_id: IdText
    currency: CurrencyCode
    created_at: UtcTime
    metadata: MetadataMap = msgspec.field(default_factory=dict)


class AccountCloseRequested(Event, frozen=True, kw_only=True):
    """Close an account; declined while it holds money or open holds."""

    schema: Literal["account.close.requested"] = "account.close.requested"
    v: Literal[1] = 1
    request_id: IdText
    account_id: IdText
    created_at: UtcTime
    metadata: MetadataMap = msgspec.field(default_factory=dict)


class DepositRequested(Event, frozen=True, kw_only=True):
    """Money arrived from outside (a top-up): credit the account from the currency's funding account."""

    schema: Literal["deposit.requested"] = "deposit.requested"
    v: Literal[1] = 1
    request_id: IdText
    account_id: IdText
    amount_minor: PositiveAmountMinor
    currency: CurrencyCode
    source_ref: ExternalRef
    created_at: UtcTime
    metadata: MetadataMap = msgspec.field(default_factory=dict)


class WithdrawalRequested(Event, frozen=True, kw_only=True):
    """Pay money out of the account to `destination_ref`, through the currency's payout-clearing account."""

    schema: Literal["withdrawal.requested"] = "withdrawal.requested"
    v: Literal[1] = 1
    request_id: IdText
    account_id: IdText
    amount_minor: PositiveAmountMinor
    currency: CurrencyCode
    destination_ref: ExternalRef
    created_at: UtcTime
    metadata: MetadataMap = msgspec.field(default_factory=dict)


class CaptureRequested(Event, frozen=True, kw_only=True):
    """Capture a manual-capture payment's hold: all of it, or less (the rest is released).

    On the payer's account like the payment (key = `account_id`, the payment's
    payer), so it is decided in order with the account's other requests.
    """

    schema: Literal["capture.requested"] = "capture.requested"
    v: Literal[1] = 1
    request_id: IdText
    account_id: IdText
    payment_id: IdText
    amount_minor: PositiveAmountMinor
    currency: CurrencyCode
    created_at: UtcTime
    metadata: MetadataMap = msgspec.field(default_factory=dict)


class VoidRequested(Event, frozen=True, kw_only=True):
    """Release a manual-capture payment's whole hold without capturing anything."""

    schema: Literal["void.requested"] = "void.requested"
    v: Literal[1] = 1
    request_id: IdText
    account_id: IdText
    payment_id: IdText
    created_at: UtcTime
    metadata: MetadataMap = msgspec.field(default_factory=dict)


# Defined in schemas/refunds.py with its events; a request on the payer's account like the others.
from schemas.refunds import RefundRequested  # noqa: E402

AccountRequest = (
    AccountOpenRequested
    | AccountCloseRequested
    | DepositRequested
    | WithdrawalRequested
    | CaptureRequested
    | VoidRequested
    | RefundRequested
)

REQUEST_KINDS: dict[type[msgspec.Struct], AccountRequestKind] = {
    AccountOpenRequested: "account.open",
    AccountCloseRequested: "account.close",
    DepositRequested: "deposit",
    WithdrawalRequested: "withdrawal",
    CaptureRequested: "capture",
    VoidRequested: "void",
    RefundRequested: "refund",
}
REQUEST_TYPES: dict[str, type[AccountRequest]] = {kind: t for t, kind in REQUEST_KINDS.items()}  # type: ignore[misc]


def request_kind(request: AccountRequest) -> AccountRequestKind:
    return REQUEST_KINDS[type(request)]


def request_identity(request: AccountRequest) -> tuple[object, ...]:
    """What a repeat of the request must agree on: everything but created_at and metadata."""
    fields = msgspec.structs.asdict(request)
    fields.pop("created_at")
    fields.pop("metadata")
    return tuple(sorted(fields.items()))


class AccountRequestApproved(Event, frozen=True, kw_only=True):
    """Risk passed an account request on to funds (key = account id, in order with its payments).

    It carries only the request's key: funds reads the request risk stored.
    """

    schema: Literal["account.request.approved"] = "account.request.approved"
    v: Literal[1] = 1
    event_id: RefText
    kind: AccountRequestKind
    request_id: IdText
    account_id: IdText
    assessed_at: UtcTime


# succeeded: applied (account open or closed, money moved, a hold captured or
# voided); declined: funds refused it (unknown or closed account, currency
# mismatch, insufficient funds, account not empty, a hold not open for
# capture); rejected: risk refused it (blocklist, limits).
AccountOutcomeStatus = Literal["succeeded", "declined", "rejected"]


class AccountOutcome(Event, frozen=True, kw_only=True):
    """The answer to an account request, for downstream systems (key = account id)."""

    schema: Literal["account.outcome"] = "account.outcome"
    v: Literal[1] = 1
    event_id: RefText
    kind: AccountRequestKind
    request_id: IdText
    account_id: IdText
    status: AccountOutcomeStatus
    stage: Literal["risk", "funds"]
    reasons: Reasons
    amount_minor: PositiveAmountMinor | None = None
    currency: CurrencyCode | None = None
    journal_id: RefText | None = None
    created_at: UtcTime
    occurred_at: UtcTime
    # Captures, voids and refunds: the payment they act on.
    payment_id: IdText | None = None


def account_request_event_id(kind: str, request_id: str) -> str:
    return f"{kind}:{request_id}:risk"


def account_outcome_event_id(kind: str, request_id: str) -> str:
    # One outcome per request: its status is fixed once decided.
    return f"{kind}:{request_id}:outcome"


def journal_id_for(kind: str, request_id: str) -> str:
    return f"{kind}:{request_id}"
