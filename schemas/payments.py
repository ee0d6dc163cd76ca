"""Payment events: what upstream publishes and what each money stage emits.

Every event carries `event_id`, derived from the payment id and the stage, so a
replayed input yields the same event again and consumers can drop repeats.
`schema` names the event and `v` its version; a consumer rejects a version it
does not know instead of guessing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from schemas.money import CurrencyCode, NonNegativeAmountMinor, PositiveAmountMinor

# Patterns end in \Z, not $: msgspec matches with Python's re.search, where $ also
# matches before a trailing newline ("pay-1\n" would pass). schemas/registry.py
# writes \Z as $ in the JSON Schema files, whose ECMA-262 $ means the end.
IdText = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+\Z")]
# Ids paystream derives from an IdText (event, hold, journal and batch ids) need more room.
RefText = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
CountryCode = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}\Z")]
UtcTime = Annotated[datetime, msgspec.Meta(tz=True)]
MetadataMap = Annotated[
    dict[
        Annotated[str, msgspec.Meta(min_length=1, max_length=64)],
        Annotated[str, msgspec.Meta(max_length=512)],
    ],
    msgspec.Meta(max_length=32),
]
Reasons = Annotated[list[Annotated[str, msgspec.Meta(max_length=200)]], msgspec.Meta(max_length=16)]
PaymentMethod = Literal["card", "wallet", "bank_transfer"]
# automatic: captured as soon as the hold is placed; manual: the hold waits for
# a capture.requested or a void.requested, and expires at its deadline.
CaptureMode = Literal["automatic", "manual"]


class Event(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every contract: strict (unknown fields are errors) and immutable."""


class PaymentRequested(Event, frozen=True, kw_only=True):
    """Upstream asks to move `amount_minor` from a payer to a merchant.

    `payment_id` is the upstream idempotency key: publishing the same payment
    twice is answered like publishing it once.
    """

    schema: Literal["payment.requested"] = "payment.requested"
    v: Literal[1] = 1
    payment_id: IdText
    payer_account: IdText
    merchant_id: IdText
    amount_minor: PositiveAmountMinor
    currency: CurrencyCode
    country: CountryCode
    method: PaymentMethod
    created_at: UtcTime
    capture: CaptureMode = "automatic"
    # Manual capture only: when the uncaptured hold expires, at the latest
    # created_at + PAYSTREAM_HOLD_EXPIRY_S_MAX (an earlier time shortens it).
    capture_by: UtcTime | None = None
    metadata: MetadataMap = msgspec.field(default_factory=dict)


class RiskAssessed(Event, frozen=True, kw_only=True):
    """The risk stage approved a payment; rejections go to outcomes only."""

    schema: Literal["risk.assessed"] = "risk.assessed"
    v: Literal[1] = 1
    event_id: RefText
    decision: Literal["approved", "rejected"]
    reasons: Reasons
    assessed_at: UtcTime
    payment: PaymentRequested


class FundsHeld(Event, frozen=True, kw_only=True):
    """The payer's available balance was reduced by a hold of the full amount."""

    schema: Literal["funds.held"] = "funds.held"
    v: Literal[1] = 1
    event_id: RefText
    hold_id: RefText
    held_at: UtcTime
    payment: PaymentRequested
    # A manual capture: the amount to capture (at most the payment's); the rest
    # of the hold is released. None: capture the whole amount.
    capture_minor: PositiveAmountMinor | None = None


class PaymentCleared(Event, frozen=True, kw_only=True):
    """The hold was captured and one balanced journal posted: gross = fee + net."""

    schema: Literal["payment.cleared"] = "payment.cleared"
    v: Literal[1] = 1
    event_id: RefText
    payment_id: IdText
    payer_account: IdText
    merchant_id: IdText
    currency: CurrencyCode
    gross_minor: PositiveAmountMinor
    fee_minor: NonNegativeAmountMinor
    net_minor: NonNegativeAmountMinor
    journal_id: RefText
    # Event time of the payment (its created_at): it picks the settlement cycle.
    event_time: UtcTime
    cleared_at: UtcTime


# `failed`: the payment was accepted but a later stage could not go on with it
# (its record was isolated as poison, or clearing found no fee schedule); any
# hold was released. Terminal, like rejected, declined and settled.
# Manual capture (v2): `authorized` (held, waiting for a capture or a void),
# then `cleared` (captured, `captured_minor` may be less than the amount),
# `voided` or `expired` (the hold released; terminal).
OutcomeStatus = Literal["rejected", "declined", "failed", "authorized", "voided", "expired", "cleared", "settled"]
OutcomeStage = Literal["risk", "funds", "clearing", "settlement"]


class PaymentOutcome(Event, frozen=True, kw_only=True):
    """A terminal or customer-visible status, for downstream systems."""

    schema: Literal["payment.outcome"] = "payment.outcome"
    v: Literal[2] = 2
    event_id: RefText
    payment_id: IdText
    status: OutcomeStatus
    stage: OutcomeStage
    reasons: Reasons
    payer_account: IdText
    merchant_id: IdText
    amount_minor: PositiveAmountMinor
    currency: CurrencyCode
    created_at: UtcTime
    occurred_at: UtcTime
    batch_id: RefText | None = None
    # What was captured (cleared and settled outcomes): less than amount_minor after a partial capture.
    captured_minor: PositiveAmountMinor | None = None


def outcome_of(
    payment: PaymentRequested,
    status: OutcomeStatus,
    stage: OutcomeStage,
    occurred_at: datetime,
    reasons: list[str] | None = None,
    batch_id: str | None = None,
) -> PaymentOutcome:
    """The outcome event of `payment` reaching `status`; its id is fixed by payment and status."""
    return PaymentOutcome(
        event_id=outcome_event_id(payment.payment_id, status),
        payment_id=payment.payment_id,
        status=status,
        stage=stage,
        reasons=reasons or [],
        payer_account=payment.payer_account,
        merchant_id=payment.merchant_id,
        amount_minor=payment.amount_minor,
        currency=payment.currency,
        created_at=payment.created_at,
        occurred_at=occurred_at,
        batch_id=batch_id,
    )


def risk_event_id(payment_id: str) -> str:
    return f"{payment_id}:risk"


def funds_event_id(payment_id: str) -> str:
    return f"{payment_id}:funds"


def clearing_event_id(payment_id: str) -> str:
    return f"{payment_id}:clearing"


def outcome_event_id(payment_id: str, status: str) -> str:
    return f"{payment_id}:{status}"
