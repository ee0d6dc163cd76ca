"""Funds' decisions on a manual-capture hold: capture (all or part), void, and when it has expired.

Pure functions over the hold and the account as the batch sees them, called
in input order with the account's other requests (`workers.account_rules`).
A hold is decided at most once: whichever of a capture, a void or the expiry
commits first ends it, and the others are declined with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from schemas.accounts import CaptureRequested, VoidRequested
from schemas.payments import PaymentRequested

if TYPE_CHECKING:  # account_rules calls into this module
    from workers.account_rules import AccountState

# What a hold that is no longer open says to a capture or a void.
_ENDED = {
    "capturing": "already_captured",
    "captured": "already_captured",
    "voided": "already_voided",
    "expired": "hold_expired",
    "released": "payment_failed",
    "declined": "not_authorized",
}


@dataclass(slots=True)
class HoldState:
    """A payment's hold, locked for the batch (see `workers.funds_capture.lock_payment_holds`)."""

    payment_id: str
    account_id: str
    amount_minor: int
    currency: str
    status: str
    capture_mode: str
    expires_at: datetime | None
    capture_minor: int | None = None
    changed: bool = False


def hold_deadline(payment: PaymentRequested, hold_expiry_s_max: int) -> datetime | None:
    """When a manual-capture payment's hold expires: its `capture_by`, at most the setting after created_at."""
    if payment.capture != "manual":
        return None
    latest = payment.created_at + timedelta(seconds=hold_expiry_s_max)
    return latest if payment.capture_by is None else min(payment.capture_by, latest)


def _refusal(
    request: CaptureRequested | VoidRequested, hold: HoldState | None, now: datetime, currency: str | None
) -> str | None:
    if hold is None or hold.capture_mode != "manual":
        return f"not_authorized: no manual-capture authorization for payment {request.payment_id}"
    if hold.account_id != request.account_id:
        return f"payment_not_of_account: payment {request.payment_id} is not of account {request.account_id}"
    if hold.status != "held":
        return f"{_ENDED[hold.status]}: the hold of payment {request.payment_id} is {hold.status}"
    if hold.expires_at is not None and now >= hold.expires_at:
        return f"hold_expired: the hold of payment {request.payment_id} expired at {hold.expires_at.isoformat()}"
    if currency is not None and currency != hold.currency:
        return f"currency_mismatch: the hold is in {hold.currency}, the request in {currency}"
    return None


def capture_refusal(request: CaptureRequested, hold: HoldState | None, now: datetime) -> str | None:
    """Why the capture cannot be accepted (None: accepted, and the hold is `capturing` its amount)."""
    reason = _refusal(request, hold, now, request.currency)
    if reason is None:
        assert hold is not None
        if request.amount_minor > hold.amount_minor:
            reason = f"exceeds_authorized: {request.amount_minor} > authorized {hold.amount_minor}"
        else:
            hold.status, hold.capture_minor, hold.changed = "capturing", request.amount_minor, True
    return reason


def void_refusal(
    request: VoidRequested, hold: HoldState | None, accounts: dict[str, AccountState], now: datetime
) -> str | None:
    """Why the void cannot be applied (None: the hold is `voided` and its amount no longer held)."""
    reason = _refusal(request, hold, now, None)
    if reason is None:
        assert hold is not None
        hold.status, hold.changed = "voided", True
        account = accounts.get(hold.account_id)
        assert account is not None, hold.account_id  # locked with the batch's accounts
        account.held_minor -= hold.amount_minor
        assert account.held_minor >= 0
    return reason
