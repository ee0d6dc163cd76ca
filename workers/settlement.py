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
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec

from paystream.errors import ConcurrentChangeError
from paystream.ledger import journal, merchant_pending_account, payout_clearing_account, post_journals
from paystream.settings import Settings
from paystream.stage.contract import Accepted, Output, Refused, StageResult, Tick
from schemas.payments import PaymentCleared, PaymentOutcome, clearing_event_id, outcome_event_id
from schemas.settlement import SettlementBatchClosed, batch_closed_event_id
from topology.topics import PAYMENTS_CLEARED, PAYMENTS_OUTCOMES, SETTLEMENTS_CLOSED
from workers.cycles import CycleClock

# Bounds on one tick's transactions: a daily cut-off that closes every
# merchant's batch at once is spread over ticks instead of one giant transaction.
CLOSE_BATCHES_MAX = 200
CLOSE_ITEMS_MAX = 50_000
PUBLISH_ITEMS_MAX = 5_000


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
            """SELECT k.merchant_id, k.currency, last.cycle_start AS last_closed
               FROM unnest($1::text[], $2::text[]) AS k(merchant_id, currency)
               CROSS JOIN LATERAL (
                   SELECT b.cycle_start FROM settlement_batches b
                   WHERE b.merchant_id = k.merchant_id AND b.currency = k.currency AND b.status = 'closed'
                   ORDER BY b.cycle_start DESC LIMIT 1) last""",
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
            chunk = await _next_chunk(connection, now)
        if chunk is None:
            return None

        async def mark_published() -> None:
            async with pool.acquire() as connection:
                await _advance_cursors(connection, chunk)

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


async def close_due_batches(connection: Any, now: datetime, items_max: int = CLOSE_ITEMS_MAX) -> list[str]:
    """Close open batches whose cut-off passed, oldest first, up to `items_max` items: fix totals, post payouts.

    The payments are marked settled later, chunk by chunk, as their outcomes
    are published (`_next_chunk`): the close itself writes one row per batch.
    """
    async with connection.transaction():
        candidates = await connection.fetch(
            """SELECT b.batch_id, b.merchant_id, b.currency,
                      (SELECT count(*) FROM settlement_items i WHERE i.batch_id = b.batch_id) AS n
               FROM settlement_batches b
               WHERE b.status = 'open' AND b.cutoff_at <= $1
               ORDER BY b.cutoff_at, b.batch_id LIMIT $2 FOR UPDATE OF b SKIP LOCKED""",
            now,
            CLOSE_BATCHES_MAX,
        )
        due: list[Any] = []
        items = 0
        for row in candidates:
            if due and items + row["n"] > items_max:
                break
            due.append(row)
            items += row["n"]
        if not due:
            return []
        batch_ids = [row["batch_id"] for row in due]
        totals = await connection.fetch(
            """SELECT batch_id, count(*)::int AS n, sum(gross_minor)::bigint AS gross,
                      sum(fee_minor)::bigint AS fee, sum(net_minor)::bigint AS net
               FROM settlement_items WHERE batch_id = ANY($1::text[]) GROUP BY batch_id""",
            batch_ids,
        )
        by_batch = {row["batch_id"]: row for row in totals}
        journals = []
        for row in due:
            net = by_batch[row["batch_id"]]["net"] if row["batch_id"] in by_batch else 0
            if net > 0:
                currency = row["currency"].strip()
                journals.append(
                    journal(
                        f"pay:{row['batch_id']}",
                        "payout",
                        currency,
                        [
                            (merchant_pending_account(row["merchant_id"], currency), -net),
                            (payout_clearing_account(currency), net),
                        ],
                        batch_id=row["batch_id"],
                    )
                )
        if journals:
            await connection.execute(
                """INSERT INTO accounts (account_id, kind, owner_id, currency)
                   SELECT DISTINCT 'platform:payouts:' || c, 'payout_clearing', 'platform', c
                   FROM unnest($1::text[]) AS c ON CONFLICT (account_id) DO NOTHING""",
                sorted({j.currency for j in journals}),
            )
        await post_journals(connection, journals, now)
        journal_by_batch = {j.batch_id: j.journal_id for j in journals}
        await connection.execute(
            """
            UPDATE settlement_batches AS b SET status = 'closed', item_count = v.n, gross_minor = v.gross,
                   fee_minor = v.fee, net_minor = v.net, payout_journal_id = v.journal, closed_at = $7
            FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[])
                 AS v(id, n, gross, fee, net, journal)
            WHERE b.batch_id = v.id
            """,
            batch_ids,
            [by_batch[b]["n"] if b in by_batch else 0 for b in batch_ids],
            [by_batch[b]["gross"] if b in by_batch else 0 for b in batch_ids],
            [by_batch[b]["fee"] if b in by_batch else 0 for b in batch_ids],
            [by_batch[b]["net"] if b in by_batch else 0 for b in batch_ids],
            [journal_by_batch.get(b) for b in batch_ids],
            now,
        )
        return batch_ids


@dataclass(frozen=True, slots=True)
class Chunk:
    """One tick's share of the outbox: events to produce, then each batch's new cursor."""

    outputs: list[Output]
    # batch_id -> (last payment id in this chunk or the old cursor, whether the batch is now complete)
    cursors: dict[str, tuple[str | None, bool]]


async def _next_chunk(connection: Any, now: datetime, items_max: int = PUBLISH_ITEMS_MAX) -> Chunk | None:
    """Mark the next up to `items_max` payments of closed, unpublished batches settled; return their events."""
    async with connection.transaction():
        batches = await connection.fetch(
            """SELECT * FROM settlement_batches WHERE status = 'closed' AND published_at IS NULL
               ORDER BY closed_at, batch_id LIMIT $1""",
            CLOSE_BATCHES_MAX,
        )
        if not batches:
            return None
        outputs: list[Output] = []
        cursors: dict[str, tuple[str | None, bool]] = {}
        room = items_max
        for batch in batches:
            if room <= 0:
                break
            rows = await connection.fetch(
                """WITH chunk AS (
                       SELECT payment_id FROM settlement_items
                       WHERE batch_id = $1 AND payment_id > coalesce($2, '')
                       ORDER BY payment_id LIMIT $3)
                   UPDATE payments AS p SET status = 'settled', settled_at = coalesce(p.settled_at, $4),
                          batch_id = $1, updated_at = $4
                   FROM chunk c WHERE p.payment_id = c.payment_id
                   RETURNING p.payment_id, p.payer_account, p.merchant_id, p.amount_minor, p.currency,
                             p.created_at, p.settled_at""",
                batch["batch_id"],
                batch["outcomes_through"],
                room + 1,
                now,
            )
            rows = sorted(rows, key=lambda r: r["payment_id"])
            complete = len(rows) <= room
            rows = rows[:room]
            room -= len(rows)
            if batch["outcomes_through"] is None:
                outputs.append(_batch_closed(batch))
            outputs.extend(_settled(row, batch["batch_id"]) for row in rows)
            last = rows[-1]["payment_id"] if rows else batch["outcomes_through"]
            cursors[batch["batch_id"]] = (last, complete)
        return Chunk(outputs, cursors)


async def _advance_cursors(connection: Any, chunk: Chunk) -> None:
    batch_ids = sorted(chunk.cursors)
    await connection.execute(
        """UPDATE settlement_batches AS b SET outcomes_through = v.through,
                  published_at = CASE WHEN v.complete THEN now() END
           FROM unnest($1::text[], $2::text[], $3::bool[]) AS v(id, through, complete)
           WHERE b.batch_id = v.id AND b.published_at IS NULL""",
        batch_ids,
        [chunk.cursors[b][0] for b in batch_ids],
        [chunk.cursors[b][1] for b in batch_ids],
    )


def _batch_closed(b: Any) -> Output:
    return Output(
        SETTLEMENTS_CLOSED,
        b["merchant_id"],
        SettlementBatchClosed(
            event_id=batch_closed_event_id(b["batch_id"]),
            batch_id=b["batch_id"],
            merchant_id=b["merchant_id"],
            currency=b["currency"].strip(),
            cycle_start=b["cycle_start"],
            cycle_end=b["cycle_end"],
            item_count=b["item_count"],
            gross_minor=b["gross_minor"],
            fee_minor=b["fee_minor"],
            net_minor=b["net_minor"],
            payout_journal_id=b["payout_journal_id"],
            closed_at=b["closed_at"],
        ),
    )


def _settled(item: Any, batch_id: str) -> Output:
    return Output(
        PAYMENTS_OUTCOMES,
        item["payment_id"],
        PaymentOutcome(
            event_id=outcome_event_id(item["payment_id"], "settled"),
            payment_id=item["payment_id"],
            status="settled",
            stage="settlement",
            reasons=[],
            payer_account=item["payer_account"],
            merchant_id=item["merchant_id"],
            amount_minor=item["amount_minor"],
            currency=item["currency"].strip(),
            created_at=item["created_at"],
            occurred_at=item["settled_at"],
            batch_id=batch_id,
        ),
    )
