"""Settlement: batch cleared payments per (merchant, currency, cycle) and close batches on time.

Decides: each payment's batch from its event time and its merchant's cycle
(`workers.cycles`, read with the batches near the event times in one query
per input batch): the existing batch holding the event time, or a new one
spanning the merchant's current cycle holding it, cut so it overlaps no
existing batch of that merchant and currency (so after a cycle change the
open batch keeps its bounds and the new cycle starts where it ends). A
payment older than the end of the newest closed batch goes to the next batch.
Items are taken from what clearing stored, never from the incoming event: an
event for a payment clearing did not clear is refused (`not_cleared`), one
that disagrees with the stored clearing is refused (`idempotency_conflict`).
Writes, per input batch: one `settlement_items` row per payment, opening its
`settlement_batches` row if needed; one `settlement_refund_items` row per
refund (`workers.settlement_refunds`), taken off the batch holding its payment
while open, else off the next.
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
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import structlog

from paystream.db.plans import fetch_custom_plan
from paystream.errors import ConcurrentChangeError
from paystream.settings import Settings
from paystream.stage.contract import Accepted, Output, Refused, StageResult, Tick
from schemas.payments import PaymentCleared, clearing_event_id
from schemas.refunds import RefundCleared
from topology.topics import PAYMENTS_CLEARED
from workers.cycles import CycleSpec, Window, batch_id, cutoff, known_time_zone, place
from workers.settlement_close import advance_cursors, close_due_batches, next_chunk
from workers.settlement_refunds import add_refund_items, refund_refusal, stored_refunds

SettlementInput = PaymentCleared | RefundCleared

__all__ = ["SettlementStage", "close_due_batches"]

log = structlog.get_logger("paystream.settlement")


# Per (merchant, currency) of an input batch: the merchant's cycle (NULL: the
# global default), the end of the newest closed batch, and the batches that
# `workers.cycles.place` needs around the event times [$3, $4] (late ones
# moved to that end): the last starting at or before the earliest, all
# starting up to the latest, and the next one. Each is an index probe or a
# short range scan on (merchant_id, currency, cycle_start), newest closed
# first: bounded by the few batches near the payments, never by the
# merchant's history. `currency` is char(3): a text parameter would compare
# as text and lose the index.
NEARBY_BATCHES_SQL = """
    SELECT k.merchant_id, k.currency, m.cycle_kind, m.cycle_seconds, m.cycle_cutoff_hour, m.cycle_time_zone,
           closed.cycle_end AS closed_end, near.cycle_start, near.cycle_end
    FROM unnest($1::text[], $2::bpchar[], $3::timestamptz[], $4::timestamptz[]) AS k(merchant_id, currency, lo, hi)
    LEFT JOIN merchants m ON m.merchant_id = k.merchant_id
    LEFT JOIN LATERAL (
        SELECT b.cycle_end FROM settlement_batches b
        WHERE b.merchant_id = k.merchant_id AND b.currency = k.currency AND b.status = 'closed'
        ORDER BY b.cycle_start DESC LIMIT 1) closed ON true
    CROSS JOIN LATERAL (
        SELECT greatest(k.lo, closed.cycle_end) AS lo, greatest(k.hi, closed.cycle_end) AS hi) w
    LEFT JOIN LATERAL (
        (SELECT b.cycle_start, b.cycle_end FROM settlement_batches b
         WHERE b.merchant_id = k.merchant_id AND b.currency = k.currency AND b.cycle_start <= w.lo
         ORDER BY b.cycle_start DESC LIMIT 1)
        UNION ALL
        (SELECT b.cycle_start, b.cycle_end FROM settlement_batches b
         WHERE b.merchant_id = k.merchant_id AND b.currency = k.currency
           AND b.cycle_start > w.lo AND b.cycle_start <= w.hi)
        UNION ALL
        (SELECT b.cycle_start, b.cycle_end FROM settlement_batches b
         WHERE b.merchant_id = k.merchant_id AND b.currency = k.currency AND b.cycle_start > w.hi
         ORDER BY b.cycle_start LIMIT 1)) near ON true
"""


@dataclass(slots=True)
class _Nearby:
    """What `place` needs for one (merchant, currency): its cycle, the newest closed end, nearby batches."""

    spec: CycleSpec
    closed_end: datetime | None
    batches: list[Window] = field(default_factory=list)


class SettlementStage:
    name = "settlement"
    input_topic = PAYMENTS_CLEARED
    input_type = PaymentCleared
    # payments.cleared carries each merchant's cleared payments and refunds.
    input_types = (PaymentCleared, RefundCleared)

    def __init__(self, settings: Settings) -> None:
        # A merchant without a cycle of its own settles on the global default.
        self.default_cycle = CycleSpec.every(settings.settlement_cycle_s)
        self.grace = timedelta(seconds=settings.settlement_grace_s)

    async def apply(self, connection: Any, records: Sequence[Accepted[SettlementInput]], now: datetime) -> StageResult:
        payments = [r for r in records if isinstance(r.event, PaymentCleared)]
        refunds = [r for r in records if isinstance(r.event, RefundCleared)]
        payment_ids = sorted({r.event.payment_id for r in payments})
        stored = await _stored_clearings(connection, payment_ids) if payment_ids else {}
        stored_refund = await stored_refunds(connection, sorted({r.event.refund_id for r in refunds}))  # type: ignore[union-attr]
        result = StageResult()
        fresh: dict[str, PaymentCleared] = {}
        fresh_refunds: dict[str, RefundCleared] = {}
        for refund in refunds:
            event = refund.event
            assert isinstance(event, RefundCleared)
            refused = refund_refusal(refund, stored_refund.get(event.refund_id))  # type: ignore[arg-type]
            if refused is not None:
                result.refused.append(refused)
            elif not stored_refund[event.refund_id][1]:
                fresh_refunds.setdefault(event.refund_id, stored_refund[event.refund_id][0])
        for record in payments:
            assert isinstance(record.event, PaymentCleared)
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
        if fresh or fresh_refunds:
            items = list(fresh.values())
            negative = list(fresh_refunds.values())
            batch_ids = await self._open_batches_for(connection, [*items, *negative], now)
            if items:
                await _add_items(connection, items, batch_ids[: len(items)], now)
            if negative:
                await add_refund_items(connection, negative, batch_ids[len(items) :], now)
        # Nothing to emit per item: results go out when the batch closes.
        return result

    async def abandon(
        self, connection: Any, records: Sequence[tuple[Accepted[SettlementInput], str]], now: datetime
    ) -> list[Output]:
        # The money moved at clearing; a payment in no batch is reported by
        # reconcile (`settled_once_and_none_missing`) for an operator to act on.
        return []

    async def _open_batches_for(self, connection: Any, items: Sequence[SettlementInput], now: datetime) -> list[str]:
        """The open batch of each item, opening batches as needed; late items go to the next batch."""
        spans: dict[tuple[str, str], tuple[datetime, datetime]] = {}
        for item in items:
            key = (item.merchant_id, item.currency)
            low, high = spans.get(key, (item.event_time, item.event_time))
            spans[key] = (min(low, item.event_time), max(high, item.event_time))
        pairs = sorted(spans)
        rows = await connection.fetch(
            NEARBY_BATCHES_SQL,
            [m for m, _ in pairs],
            [c for _, c in pairs],
            [spans[p][0] for p in pairs],
            [spans[p][1] for p in pairs],
        )
        nearby = self._nearby(rows)
        wanted: list[tuple[str, str, Window]] = []
        for item in items:
            near = nearby[(item.merchant_id, item.currency)]
            wanted.append(
                (item.merchant_id, item.currency, place(item.event_time, near.spec, near.batches, near.closed_end))
            )
        unique = sorted(set(wanted))
        # Upsert locks each batch row: a concurrent close waits, then sees these items.
        # An existing batch keeps its bounds (the conflict updates nothing of them).
        try:
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
                [batch_id(m, c, w.start) for m, c, w in unique],
                [m for m, _, _ in unique],
                [c for _, c, _ in unique],
                [w.start for _, _, w in unique],
                [w.end for _, _, w in unique],
                [cutoff(w, self.grace) for _, _, w in unique],
                now,
            )
        except asyncpg.ExclusionViolationError as error:
            # Another transaction opened an overlapping batch after our read
            # (settlement_batches_no_overlap): retrying reads it and places around it.
            raise ConcurrentChangeError(f"a batch was opened concurrently: {error}") from error
        by_key = {(r["merchant_id"], r["currency"].strip(), r["cycle_start"]): r for r in rows}
        closed_meanwhile = [
            by_key[(m, c, w.start)]["batch_id"] for m, c, w in unique if by_key[(m, c, w.start)]["status"] != "open"
        ]
        if closed_meanwhile:
            # Another settlement consumer closed a batch between our read and
            # our upsert: retry the whole transaction, which then routes these
            # items to the next batch.
            raise ConcurrentChangeError(f"batches closed concurrently: {closed_meanwhile}")
        return [by_key[(m, c, w.start)]["batch_id"] for m, c, w in wanted]

    def _nearby(self, rows: Sequence[Any]) -> dict[tuple[str, str], _Nearby]:
        nearby: dict[tuple[str, str], _Nearby] = {}
        for row in rows:
            key = (row["merchant_id"], row["currency"].strip())
            if key not in nearby:
                nearby[key] = _Nearby(self._cycle_of(row), row["closed_end"])
            if row["cycle_start"] is not None:
                nearby[key].batches.append(Window(row["cycle_start"], row["cycle_end"]))
        for entry in nearby.values():
            entry.batches.sort()
        return nearby

    def _cycle_of(self, row: Any) -> CycleSpec:
        """The merchant's cycle from its row; the global default when it has none."""
        kind = row["cycle_kind"]
        if kind is None:
            return self.default_cycle
        spec = CycleSpec(kind, row["cycle_seconds"], row["cycle_cutoff_hour"], row["cycle_time_zone"])
        if spec.time_zone is not None and not known_time_zone(spec.time_zone):
            # Only a zone PostgreSQL knows and this Python's tz database does
            # not (rows are validated against both when written): settle on
            # the default rather than dead-letter the merchant's payments.
            log.error(
                "merchant time zone unknown here; default cycle used",
                merchant_id=row["merchant_id"],
                time_zone=spec.time_zone,
            )
            return self.default_cycle
        return spec

    async def tick(self, pool: Any, now: datetime) -> Tick | None:
        async with pool.acquire() as connection:
            await close_due_batches(connection, now)
            chunk = await next_chunk(connection, now)
        if chunk is None:
            return None

        async def mark_published() -> None:
            async with pool.acquire() as connection:
                await advance_cursors(connection, chunk)

        return Tick(chunk.outputs, mark_published, more=chunk.more)


def _settled_identity(event: PaymentCleared) -> tuple[str, str, str, int, int, int]:
    return (event.merchant_id, event.payer_account, event.currency, event.gross_minor, event.fee_minor, event.net_minor)


def _refusal(record: Accepted[Any], rule: str, detail: str) -> Refused:
    return Refused(record.origin, "payment_id", rule, detail, record.raw or msgspec.json.encode(record.event))


async def _stored_clearings(connection: Any, payment_ids: list[str]) -> dict[str, tuple[PaymentCleared, bool]]:
    """Each payment's clearing as clearing stored it, and whether it already has its settlement item."""
    rows = await fetch_custom_plan(
        connection,
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
