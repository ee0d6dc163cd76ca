"""Outcome events built from a stored `payments` row: the one shape every stage re-sends identically."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from paystream.stage.contract import Output
from schemas.payments import OutcomeStage, OutcomeStatus, PaymentOutcome, outcome_event_id
from topology.topics import PAYMENTS_OUTCOMES


def outcome_from_row(
    row: Any,
    status: OutcomeStatus,
    stage: OutcomeStage,
    occurred_at: datetime,
    reasons: Sequence[str] = (),
    batch_id: str | None = None,
    captured_minor: int | None = None,
) -> Output:
    """`row` has the payments columns payment_id, payer_account, merchant_id, amount_minor, currency, created_at."""
    return Output(
        PAYMENTS_OUTCOMES,
        row["payment_id"],
        PaymentOutcome(
            event_id=outcome_event_id(row["payment_id"], status),
            payment_id=row["payment_id"],
            status=status,
            stage=stage,
            reasons=list(reasons),
            payer_account=row["payer_account"],
            merchant_id=row["merchant_id"],
            amount_minor=row["amount_minor"],
            currency=row["currency"].strip(),
            created_at=row["created_at"],
            occurred_at=occurred_at,
            batch_id=batch_id,
            captured_minor=captured_minor,
        ),
    )
