"""Settlement's part for refunds: each refund becomes one negative item of its merchant's batch.

Which batch: the one holding the refunded payment's event time while it is
open (the refund reduces the batch the payment is in), else the next open
one (`workers.cycles.place` moves event times before the newest closed batch
to after it): the same placement as a late payment. The item is taken from
what funds stored (`refunds`), never from the incoming event: an event for a
refund funds never made is refused (`not_refunded`), one that disagrees with
the stored refund is refused (`idempotency_conflict`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from paystream.stage.contract import Accepted, Refused
from schemas.refunds import RefundCleared, refund_cleared_event_id


def refund_identity(event: RefundCleared) -> tuple[str, str, str, int, int, int]:
    return (
        event.payment_id,
        event.merchant_id,
        event.currency,
        event.gross_minor,
        event.fee_back_minor,
        event.net_back_minor,
    )


async def stored_refunds(connection: Any, refund_ids: Sequence[str]) -> dict[str, tuple[RefundCleared, bool]]:
    """Each refund as funds stored it, and whether it already has its settlement item."""
    if not refund_ids:
        return {}
    rows = await connection.fetch(
        """SELECT r.*, i.refund_id IS NOT NULL AS itemized
           FROM refunds r LEFT JOIN settlement_refund_items i USING (refund_id)
           WHERE r.refund_id = ANY($1::text[])""",
        list(refund_ids),
    )
    return {
        row["refund_id"]: (
            RefundCleared(
                event_id=refund_cleared_event_id(row["refund_id"]),
                refund_id=row["refund_id"],
                payment_id=row["payment_id"],
                merchant_id=row["merchant_id"],
                currency=row["currency"].strip(),
                gross_minor=row["amount_minor"],
                fee_back_minor=row["fee_back_minor"],
                net_back_minor=row["net_back_minor"],
                journal_id=row["journal_id"],
                event_time=row["event_time"],
                cleared_at=row["refunded_at"],
            ),
            row["itemized"],
        )
        for row in rows
    }


def refund_refusal(record: Accepted[RefundCleared], stored: tuple[RefundCleared, bool] | None) -> Refused | None:
    """Why the event cannot be settled (None: it agrees with the stored refund)."""
    event = record.event
    raw = record.raw or msgspec.json.encode(event)
    if stored is None:
        return Refused(record.origin, "refund_id", "not_refunded", f"funds never made refund {event.refund_id}", raw)
    if refund_identity(stored[0]) != refund_identity(event):
        return Refused(
            record.origin,
            "refund_id",
            "idempotency_conflict",
            f"refund {event.refund_id} was stored as {refund_identity(stored[0])}; the event says"
            f" {refund_identity(event)}",
            raw,
        )
    return None


async def add_refund_items(connection: Any, refunds: list[RefundCleared], batch_ids: list[str], now: datetime) -> None:
    # ON CONFLICT: a retry racing its first, unacknowledged commit adds nothing.
    await connection.execute(
        """INSERT INTO settlement_refund_items (refund_id, payment_id, batch_id, merchant_id, currency, gross_minor,
                                                fee_minor, net_minor, event_time, added_at)
           SELECT *, $10::timestamptz FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                                  $6::bigint[], $7::bigint[], $8::bigint[], $9::timestamptz[])
           ON CONFLICT (refund_id) DO NOTHING""",
        [r.refund_id for r in refunds],
        [r.payment_id for r in refunds],
        batch_ids,
        [r.merchant_id for r in refunds],
        [r.currency for r in refunds],
        [r.gross_minor for r in refunds],
        [r.fee_back_minor for r in refunds],
        [r.net_back_minor for r in refunds],
        [r.event_time for r in refunds],
        now,
    )
