"""Settlement: batch cleared payments per (merchant, currency, cycle) and close batches on time.

Decides: each payment's cycle from its event time (`workers.cycles`); a
payment whose cycle's batch already closed goes to the next open cycle.
Items are taken from what clearing stored, never from the incoming event: an
event for a payment clearing did not clear is refused (`not_cleared`), one
that disagrees with the stored clearing is refused (`idempotency_conflict`).
Writes, per input batch: one `settlement_items` row per payment, opening its
`settlement_batches` row if needed.
On a timer (`tick`), in two bounded steps:
- close: every open batch whose cut-off (cycle end + grace) has passed, oldest
  first, as many as fit in CLOSE_ITEMS_MAX items (at least one batch), in one
  transaction: totals fixed (count, gross, fees, net), one payout journal
  (merchant pending -net, payouts +net);
- publish (an outbox): the closed batches' payments, PUBLISH_ITEMS_MAX at a
  time in payment id order, are marked `settled`, then `settlement.batch_closed`
  (key merchant, with a batch's first chunk) and one `settled` outcome per
  payment are produced, then the batch's cursor (`outcomes_through`) moves;
  `published_at` is set after its last chunk. A crash anywhere re-sends the
  current chunk on the next tick, with the same event ids.
Emits nothing per input batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import msgspec

from paystream.errors import ConcurrentChangeError
from paystream.settings import Settings
from paystream.stage.contract import Accepted, Output, Refused, StageResult, Tick
from schemas.payments import PaymentCleared, clearing_event_id
from topology.topics import PAYMENTS_CLEARED
from workers.cycles import CycleClock
from workers.settlement_close import advance_cursors, close_due_batches, next_chunk

__all__ = ["SettlementStage", "close_due_batches"]


# The newest closed cycle of each (merchant, currency): one index probe per
# pair, newest first, whatever the merchant's history of closed batches.
# `currency` is char(3): a text parameter would compare as text and lose the index.
NEWEST_CLOSED_SQL = """
    SELECT k.merchant_id, k.currency, last.cycle_start AS last_closed
    FROM unnest($1::text[], $2::bpchar[]) AS k(merchant_id, currency)
    CROSS JOIN LATERAL (
        SELECT b.cycle_start FROM settlement_batches b
        WHERE b.merchant_id = k.merchant_id AND b.currency = k.currency AND b.status = 'closed'
        ORDER BY b.cycle_start DESC LIMIT 1) last
"""


class SettlementStage:
    name = "settlement"
    input_topic = PAYMENTS_CLEARED
    input_type = PaymentCleared

    def __init__(self, settings: Settings) -> None:
        self.clock = CycleClock(
            timedelta(seconds=settings.settlement_cycle_s), timedelta(seconds=settings.settlement_grace_s)
        )

    async def apply(self, connection: Any, records: Sequence[Accepted[PaymentCleared]], now: datetime) -> StageResult:
        payment_ids = sorted({r.event.payment_id for r in records})
        stored = await _stored_clearings(connection, payment_ids)
        result = StageResult()
        fresh: dict[str, PaymentCleared] = {}
        for record in records:
            payment_id = record.event.payment_id
            clearing = stored.get(payment_id)
            if clearing is None:
                result.refused.append(_refusal(record, "not_cleared", f"clearing never cleared payment {payment_id}"))
            elif _settled_identity(clearing[0]) != _settled_identity(record.event):
                result.refused.append(
                    _refusal(
                        record,
                        "idempotency_conflict",
                        f"payment {payment_id} was cleared as {_settled_identity(clearing[0])};"
                        f" the event says {_settled_identity(record.event)}",
                    )
                )
            elif not clearing[1]:
                fresh.setdefault(payment_id, clearing[0])
        if fresh:
            items = list(fresh.values())
            batch_ids = await self._open_batches_for(connection, items, now)
            await _add_items(connection, items, batch_ids, now)
        # Nothing to emit per item: results go out when the batch closes.
        return result

    async def abandon(
        self, connection: Any, records: Sequence[tuple[Accepted[PaymentCleared], str]], now: datetime
    ) -> list[Output]:
        # The money moved at clearing; a payment in no batch is reported by
        # reconcile (`settled_once_and_none_missing`) for an operator to act on.
        return []

    async def _open_batches_for(self, connection: Any, items: list[PaymentCleared], now: datetime) -> list[str]:
        """The open batch of each item, opening batches as needed and skipping closed cycles."""
        wanted = [(i.merchant_id, i.currency, self.clock.cycle_start(i.event_time)) for i in items]
        keys = sorted(set(wanted))
        # Later cycles than the newest closed one are open (or not yet opened).
        # One index probe per (merchant, currency), newest first: bounded by
        # the few open batches, not by the merchant's history of closed ones.
        pairs = sorted({(k[0], k[1]) for k in keys})
        closed_rows = await connection.fetch(
            NEWEST_CLOSED_SQL,
            [m for m, _ in pairs],
            [c for _, c in pairs],
        )
        last_closed = {(r["merchant_id"], r["currency"].strip()): r["last_closed"] for r in closed_rows}
        resolved = []
        for merchant, currency, start in wanted:
            newest_closed = last_closed.get((merchant, currency))
            if newest_closed is not None and start <= newest_closed:
                start = newest_closed + self.clock.cycle  # late: the next batch takes it
            resolved.append((merchant, currency, start))
        unique = sorted(set(resolved))
        # Upsert locks each batch row: a concurrent close waits, then sees these items.
        rows = await connection.fetch(
            """
            INSERT INTO settlement_batches AS b (batch_id, merchant_id, currency, cycle_start, cycle_end,
                                                 cutoff_at, status, opened_at)
            SELECT v.id, v.merchant, v.currency, v.start, v.end_, v.cutoff, 'open', $7
            FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
                        $6::timestamptz[]) AS v(id, merchant, currency, start, end_, cutoff)
            ON CONFLICT (merchant_id, currency, cycle_start) DO UPDATE SET opened_at = b.opened_at
            RETURNING batch_id, merchant_id, currency, cycle_start, status
            """,
            [self.clock.batch_id(m, c, s) for m, c, s in unique],
            [m for m, _, _ in unique],
            [c for _, c, _ in unique],
            [s for _, _, s in unique],
            [s + self.clock.cycle for _, _, s in unique],
            [self.clock.cutoff(s) for _, _, s in unique],
            now,
        )
        by_key = {(r["merchant_id"], r["currency"].strip(), r["cycle_start"]): r for r in rows}
        closed_meanwhile = [by_key[k]["batch_id"] for k in unique if by_key[k]["status"] != "open"]
        if closed_meanwhile:
            # Another settlement consumer closed a batch between our read and
            # our upsert: retry the whole transaction, which then routes these
            # items to the next cycle.
            raise ConcurrentChangeError(f"batches closed concurrently: {closed_meanwhile}")
        return [by_key[key]["batch_id"] for key in resolved]

    async def tick(self, pool: Any, now: datetime) -> Tick | None:
        async with pool.acquire() as connection:
            await close_due_batches(connection, now)
            chunk = await next_chunk(connection, now)
        if chunk is None:
            return None

        async def mark_published() -> None:
            async with pool.acquire() as connection:
                await advance_cursors(connection, chunk)

        return Tick(chunk.outputs, mark_published)


def _settled_identity(event: PaymentCleared) -> tuple[str, str, str, int, int, int]:
    return (event.merchant_id, event.payer_account, event.currency, event.gross_minor, event.fee_minor, event.net_minor)


def _refusal(record: Accepted[PaymentCleared], rule: str, detail: str) -> Refused:
    return Refused(record.origin, "payment_id", rule, detail, record.raw or msgspec.json.encode(record.event))


async def _stored_clearings(connection: Any, payment_ids: list[str]) -> dict[str, tuple[PaymentCleared, bool]]:
    """Each payment's clearing as clearing stored it, and whether it already has its settlement item."""
    rows = await connection.fetch(
        """SELECT c.payment_id, c.payer_account, c.merchant_id, c.currency, c.gross_minor, c.fee_minor,
                  c.net_minor, c.journal_id, c.event_time, c.cleared_at, i.payment_id IS NOT NULL AS itemized
           FROM clearings c LEFT JOIN settlement_items i USING (payment_id)
           WHERE c.payment_id = ANY($1::text[])""",
        payment_ids,
    )
    return {
        row["payment_id"]: (
            PaymentCleared(
                event_id=clearing_event_id(row["payment_id"]),
                payment_id=row["payment_id"],
                payer_account=row["payer_account"],
                merchant_id=row["merchant_id"],
                currency=row["currency"].strip(),
                gross_minor=row["gross_minor"],
                fee_minor=row["fee_minor"],
                net_minor=row["net_minor"],
                journal_id=row["journal_id"],
                event_time=row["event_time"],
                cleared_at=row["cleared_at"],
            ),
            row["itemized"],
        )
        for row in rows
    }


async def _add_items(connection: Any, items: list[PaymentCleared], batch_ids: list[str], now: datetime) -> None:
    # ON CONFLICT: a retry that runs while a first, unacknowledged commit lands
    # finds the items stored; it must add nothing rather than fail.
    await connection.execute(
        """
        WITH added AS (
            INSERT INTO settlement_items (payment_id, batch_id, merchant_id, currency, gross_minor, fee_minor,
                                          net_minor, event_time, added_at)
            SELECT *, $9::timestamptz FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                                     $6::bigint[], $7::bigint[], $8::timestamptz[])
            ON CONFLICT (payment_id) DO NOTHING
            RETURNING payment_id, batch_id
        )
        UPDATE payments AS p SET batch_id = a.batch_id, updated_at = $9
        FROM added a WHERE p.payment_id = a.payment_id
        """,
        [i.payment_id for i in items],
        batch_ids,
        [i.merchant_id for i in items],
        [i.currency for i in items],
        [i.gross_minor for i in items],
        [i.fee_minor for i in items],
        [i.net_minor for i in items],
        [i.event_time for i in items],
        now,
    )
