"""Settlement: batch cleared payments per (merchant, currency, cycle) and close batches on time.

Decides: each payment's cycle from its event time (`workers.cycles`); a
payment whose cycle's batch already closed goes to the next open cycle.
Writes, per input batch: one `settlement_items` row per payment, opening its
`settlement_batches` row if needed.
On a timer (`tick`), closes every open batch whose cut-off (cycle end +
grace) has passed, in one transaction: totals fixed (count, gross, fees, net),
one payout journal (merchant pending -net, payouts +net), payments `settled`.
Emits, after the close committed: `settlement.batch_closed` (key merchant) and a
`settled` outcome per payment. Closed-but-unpublished batches are an outbox:
a crash before publishing re-publishes them on the next tick.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from paystream.errors import ConcurrentChangeError
from paystream.ledger import journal, merchant_pending_account, payout_clearing_account, post_journals
from paystream.settings import Settings
from paystream.stage.contract import Accepted, Output, StageResult, Tick
from schemas.payments import PaymentCleared, PaymentOutcome, outcome_event_id
from schemas.settlement import SettlementBatchClosed, batch_closed_event_id
from topology.topics import PAYMENTS_CLEARED, PAYMENTS_OUTCOMES, SETTLEMENTS_CLOSED
from workers.cycles import CycleClock

CLOSE_BATCHES_MAX = 200
PUBLISH_BATCHES_MAX = 50


class SettlementStage:
    name = "settlement"
    input_topic = PAYMENTS_CLEARED
    input_type = PaymentCleared

    def __init__(self, settings: Settings) -> None:
        self.clock = CycleClock(
            timedelta(seconds=settings.settlement_cycle_s), timedelta(seconds=settings.settlement_grace_s)
        )

    async def apply(self, connection: Any, records: Sequence[Accepted[PaymentCleared]], now: datetime) -> StageResult:
        payment_ids = [r.event.payment_id for r in records]
        rows = await connection.fetch(
            "SELECT payment_id FROM settlement_items WHERE payment_id = ANY($1::text[])", payment_ids
        )
        done = {row["payment_id"] for row in rows}
        fresh: dict[str, PaymentCleared] = {}
        for record in records:
            if record.event.payment_id not in done:
                fresh.setdefault(record.event.payment_id, record.event)
        if fresh:
            items = list(fresh.values())
            batch_ids = await self._open_batches_for(connection, items, now)
            await _add_items(connection, items, batch_ids, now)
        # Nothing to emit per item: results go out when the batch closes.
        return StageResult()

    async def _open_batches_for(self, connection: Any, items: list[PaymentCleared], now: datetime) -> list[str]:
        """The open batch of each item, opening batches as needed and skipping closed cycles."""
        wanted = [(i.merchant_id, i.currency, self.clock.cycle_start(i.event_time)) for i in items]
        keys = sorted(set(wanted))
        # Later cycles than the newest closed one are open (or not yet opened).
        closed_rows = await connection.fetch(
            """SELECT merchant_id, currency, max(cycle_start) AS last_closed FROM settlement_batches
               WHERE status = 'closed' AND merchant_id = ANY($1::text[])
               GROUP BY merchant_id, currency""",
            sorted({k[0] for k in keys}),
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
            outputs, batch_ids = await _unpublished(connection)
        if not batch_ids:
            return None

        async def mark_published() -> None:
            async with pool.acquire() as connection:
                await connection.execute(
                    """UPDATE settlement_batches SET published_at = now()
                       WHERE batch_id = ANY($1::text[]) AND published_at IS NULL""",
                    batch_ids,
                )

        return Tick(outputs, mark_published)


async def _add_items(connection: Any, items: list[PaymentCleared], batch_ids: list[str], now: datetime) -> None:
    await connection.execute(
        """
        INSERT INTO settlement_items (payment_id, batch_id, merchant_id, currency, gross_minor, fee_minor,
                                      net_minor, event_time, added_at)
        SELECT *, $9::timestamptz FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                                 $6::bigint[], $7::bigint[], $8::timestamptz[])
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
    await connection.execute(
        """UPDATE payments AS p SET batch_id = v.batch, updated_at = $3
           FROM unnest($1::text[], $2::text[]) AS v(id, batch) WHERE p.payment_id = v.id""",
        [i.payment_id for i in items],
        batch_ids,
        now,
    )


async def close_due_batches(connection: Any, now: datetime) -> list[str]:
    """Close open batches whose cut-off passed: fix totals, post payouts, settle payments."""
    async with connection.transaction():
        due = await connection.fetch(
            """SELECT batch_id, merchant_id, currency FROM settlement_batches
               WHERE status = 'open' AND cutoff_at <= $1
               ORDER BY cutoff_at, batch_id LIMIT $2 FOR UPDATE SKIP LOCKED""",
            now,
            CLOSE_BATCHES_MAX,
        )
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
        await connection.execute(
            """UPDATE payments AS p SET status = 'settled', settled_at = $2, batch_id = i.batch_id,
                      updated_at = $2
               FROM settlement_items i
               WHERE i.batch_id = ANY($1::text[]) AND p.payment_id = i.payment_id AND p.status = 'cleared'""",
            batch_ids,
            now,
        )
        return batch_ids


async def _unpublished(connection: Any) -> tuple[list[Output], list[str]]:
    batches = await connection.fetch(
        """SELECT * FROM settlement_batches WHERE status = 'closed' AND published_at IS NULL
           ORDER BY closed_at, batch_id LIMIT $1""",
        PUBLISH_BATCHES_MAX,
    )
    if not batches:
        return [], []
    batch_ids = [b["batch_id"] for b in batches]
    items = await connection.fetch(
        """SELECT p.payment_id, p.payer_account, p.merchant_id, p.amount_minor, p.currency, p.created_at,
                  p.settled_at, i.batch_id
           FROM settlement_items i JOIN payments p USING (payment_id)
           WHERE i.batch_id = ANY($1::text[]) ORDER BY i.batch_id, p.payment_id""",
        batch_ids,
    )
    outputs: list[Output] = []
    for b in batches:
        outputs.append(
            Output(
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
        )
    for item in items:
        outputs.append(
            Output(
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
                    batch_id=item["batch_id"],
                ),
            )
        )
    return outputs, batch_ids
