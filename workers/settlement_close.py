"""Settlement's timer work: closing due batches and publishing them, each step bounded.

Close: every open batch whose cut-off (cycle end + grace) has passed, oldest
first, as many as fit in CLOSE_ITEMS_MAX items (at least one batch), in one
transaction: totals fixed (count, gross, fees, net: payments' sums minus
refunds' sums), one payout journal (merchant pending -net, payouts +net; the
other way for a negative net; none for zero). The close writes one row per
batch, never one per payment, so its cost is the sums over its items.

Publish (an outbox): the closed batches' payments, PUBLISH_ITEMS_MAX at a
time in payment id order, are marked `settled` in one transaction; then the
stage loop produces `settlement.batch_closed` (with a batch's first chunk)
and one `settled` outcome per payment, and only after the acknowledgements
moves each batch's cursor (`outcomes_through`), setting `published_at` after
its last chunk. A crash anywhere re-sends the current chunk on the next tick,
with the same event ids and the same settled_at.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from paystream.ledger import journal, merchant_pending_account, payout_clearing_account, post_journals
from paystream.stage.contract import Output
from schemas.settlement import SettlementBatchClosed, batch_closed_event_id
from topology.topics import SETTLEMENTS_CLOSED
from workers.outcomes import outcome_from_row

# Bounds on one tick's transactions: a daily cut-off that closes every
# merchant's batch at once is spread over ticks instead of one giant transaction.
log = structlog.get_logger("paystream.settlement")

BIGINT_MAX = 2**63 - 1
CLOSE_BATCHES_MAX = 200
CLOSE_ITEMS_MAX = 50_000
# One chunk's UPDATE of payments to `settled`: 10,000 rows took 105-140 ms and
# slowed the other stages' transactions to 60-126 ms meanwhile; a chunk is now
# small, and the stage loop runs the next one after its next batch (`more`).
PUBLISH_ITEMS_MAX = 1_000


async def close_due_batches(connection: Any, now: datetime, items_max: int = CLOSE_ITEMS_MAX) -> list[str]:
    """Close open batches whose cut-off passed, oldest first, up to `items_max` items: fix totals, post payouts.

    The payments are marked settled later, chunk by chunk, as their outcomes
    are published (`next_chunk`): the close itself writes one row per batch.
    """
    async with connection.transaction():
        candidates = await connection.fetch(
            """SELECT b.batch_id, b.merchant_id, b.currency,
                      (SELECT count(*) FROM settlement_items i WHERE i.batch_id = b.batch_id)
                      + (SELECT count(*) FROM settlement_refund_items r WHERE r.batch_id = b.batch_id) AS n
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
        # Summed as numeric: a batch past bigint must not fail the close of every other one.
        # Payments count positive, refunds negative (docs/design-decisions.md §16).
        totals = await connection.fetch(
            """SELECT batch_id, count(*) FILTER (WHERE sign > 0)::int AS n, count(*) FILTER (WHERE sign < 0)::int AS r,
                      sum(sign * gross_minor) AS gross, sum(sign * fee_minor) AS fee, sum(sign * net_minor) AS net
               FROM (SELECT batch_id, 1 AS sign, gross_minor, fee_minor, net_minor FROM settlement_items
                     WHERE batch_id = ANY($1::text[])
                     UNION ALL
                     SELECT batch_id, -1, gross_minor, fee_minor, net_minor FROM settlement_refund_items
                     WHERE batch_id = ANY($1::text[])) items
               GROUP BY batch_id""",
            batch_ids,
        )
        by_batch = {
            row["batch_id"]: {
                "n": row["n"],
                "r": row["r"],
                "gross": int(row["gross"]),
                "fee": int(row["fee"]),
                "net": int(row["net"]),
            }
            for row in totals
        }
        too_large = sorted(
            b for b, t in by_batch.items() if max(abs(t["gross"]), abs(t["fee"]), abs(t["net"])) > BIGINT_MAX
        )
        if too_large:
            # Cannot happen through the pipeline (the merchant daily limit is
            # capped so a batch fits); if rows were written by hand, the batch
            # stays open for an operator and the others close.
            log.error("settlement batch totals exceed bigint; left open", batches=too_large)
            due = [row for row in due if row["batch_id"] not in too_large]
            batch_ids = [row["batch_id"] for row in due]
            if not due:
                return []
        journals = []
        for row in due:
            net = by_batch[row["batch_id"]]["net"] if row["batch_id"] in by_batch else 0
            # A negative net (refunds above sales) runs the other way: the merchant's
            # pending account is made whole from payouts, which then collects from it.
            if net != 0:
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
                   fee_minor = v.fee, net_minor = v.net, payout_journal_id = v.journal, closed_at = $7,
                   refund_count = v.r
            FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[], $8::int[])
                 AS v(id, n, gross, fee, net, journal, r)
            WHERE b.batch_id = v.id
            """,
            batch_ids,
            [by_batch[b]["n"] if b in by_batch else 0 for b in batch_ids],
            [by_batch[b]["gross"] if b in by_batch else 0 for b in batch_ids],
            [by_batch[b]["fee"] if b in by_batch else 0 for b in batch_ids],
            [by_batch[b]["net"] if b in by_batch else 0 for b in batch_ids],
            [journal_by_batch.get(b) for b in batch_ids],
            now,
            [by_batch[b]["r"] if b in by_batch else 0 for b in batch_ids],
        )
        return batch_ids


@dataclass(frozen=True, slots=True)
class Chunk:
    """One tick's share of the outbox: events to produce, then each batch's new cursor."""

    outputs: list[Output]
    # batch_id -> (last payment id in this chunk or the old cursor, whether the batch is now complete)
    cursors: dict[str, tuple[str | None, bool]]
    # The chunk was cut at items_max: more payments of closed batches wait now.
    more: bool = False


async def next_chunk(connection: Any, now: datetime, items_max: int = PUBLISH_ITEMS_MAX) -> Chunk | None:
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
                             p.created_at, p.settled_at, p.gross_minor""",
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
        more = len(cursors) < len(batches) or not all(complete for _, complete in cursors.values())
        return Chunk(outputs, cursors, more=more)


async def advance_cursors(connection: Any, chunk: Chunk) -> None:
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
            refund_count=b["refund_count"] or 0,
            gross_minor=b["gross_minor"],
            fee_minor=b["fee_minor"],
            net_minor=b["net_minor"],
            payout_journal_id=b["payout_journal_id"],
            closed_at=b["closed_at"],
        ),
    )


def _settled(item: Any, batch_id: str) -> Output:
    return outcome_from_row(
        item, "settled", "settlement", item["settled_at"], batch_id=batch_id, captured_minor=item["gross_minor"]
    )
