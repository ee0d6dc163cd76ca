"""`paystream payment show`, `paystream settlements list|follow`, `paystream dead-letters list`."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from paystream.cli.args import ROWS, bounded_float
from paystream.db.pool import connect
from paystream.settings import Settings
from paystream.tables import render_table, to_json

BATCH_COLUMNS = ["batch_id", "merchant_id", "currency", "cycle_start", "status", "item_count", "gross_minor",
                 "fee_minor", "net_minor", "closed_at"]  # fmt: skip


def register(sub: Any) -> None:
    payment = sub.add_parser("payment", help="one payment's timeline")
    payment_actions = payment.add_subparsers(dest="payment_command", metavar="ACTION", required=True)
    show = payment_actions.add_parser("show", help="everything a customer-service agent needs about a payment")
    show.add_argument("payment_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=show_payment)

    settlements = sub.add_parser("settlements", help="settlement batches")
    settlement_actions = settlements.add_subparsers(dest="settlements_command", metavar="ACTION", required=True)
    listing = settlement_actions.add_parser("list", help="batches, newest first")
    listing.add_argument("--merchant")
    listing.add_argument("--status", choices=("open", "closed"))
    listing.add_argument("--limit", type=ROWS, default=50)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=list_settlements)
    follow = settlement_actions.add_parser("follow", help="print batches as they close (Ctrl-C to stop)")
    follow.add_argument("--once", action="store_true", help="print the closed batches there are and exit")
    follow.add_argument("--interval", type=bounded_float(0.1, 3_600), default=1.0, help="seconds between polls")
    follow.set_defaults(func=follow_settlements)

    dead = sub.add_parser("dead-letters", help="records the stages refused")
    dead_actions = dead.add_subparsers(dest="dead_command", metavar="ACTION", required=True)
    dead_list = dead_actions.add_parser("list", help="newest first, with field, rule and origin")
    dead_list.add_argument("--stage")
    dead_list.add_argument("--limit", type=ROWS, default=50)
    dead_list.set_defaults(func=list_dead_letters)


async def show_payment(args: argparse.Namespace, settings: Settings) -> int:
    connection = await connect(settings, migrated=True)
    try:
        payment = await connection.fetchrow("SELECT * FROM payments WHERE payment_id = $1", args.payment_id)
        if payment is None:
            print(f"paystream: no payment {args.payment_id}")
            return 1
        entries = await connection.fetch(
            """SELECT j.kind, e.journal_id, e.account_id, e.amount_minor, e.created_at
               FROM journals j JOIN entries e USING (journal_id)
               WHERE j.payment_id = $1 OR j.batch_id = $2 AND e.account_id LIKE 'merchant:%'
               ORDER BY e.entry_id""",
            args.payment_id,
            payment["batch_id"],
        )
        batch = await connection.fetchrow("SELECT * FROM settlement_batches WHERE batch_id = $1", payment["batch_id"])
        hold = await connection.fetchrow("SELECT * FROM holds WHERE payment_id = $1", args.payment_id)
        # Captures and voids asked for this payment, in the order funds decided them.
        requests = await connection.fetch(
            """SELECT o.kind, o.request_id, o.status, o.reasons, o.amount_minor, o.decided_at,
                      r.fee_back_minor, r.net_back_minor, r.refunded_after_minor, i.batch_id AS refund_batch
               FROM account_operations o
               LEFT JOIN refunds r ON o.kind = 'refund' AND r.refund_id = o.request_id
               LEFT JOIN settlement_refund_items i ON i.refund_id = r.refund_id
               WHERE o.payment_id = $1 ORDER BY o.decided_at, o.request_id""",
            args.payment_id,
        )
    finally:
        await connection.close()
    if args.json:
        print(to_json({"payment": dict(payment), "batch": dict(batch) if batch else None,
                       "hold": dict(hold) if hold else None, "requests": [dict(r) for r in requests],
                       "entries": [dict(e) for e in entries]}))  # fmt: skip
        return 0
    p = payment
    print(f"payment   {p['payment_id']}   status: {p['status'].upper()}")
    print(f"requested {_t(p['created_at'])}  {p['amount_minor']} {p['currency']} (minor units)")
    print(f"          payer {p['payer_account']} -> merchant {p['merchant_id']}, {p['method']} from {p['country']}")
    print(
        f"risk      {'rejected' if p['status'] == 'rejected' else 'approved'} at {_t(p['risk_at'])}"
        + (f"  reasons: {'; '.join(p['risk_reasons'])}" if p["risk_reasons"] else "")
    )
    if p["held_at"]:
        print(f"hold      {p['hold_id']} placed at {_t(p['held_at'])}")
    if hold is not None and p["capture_mode"] == "manual":
        print(f"          manual capture: hold {hold['status']}, deadline {_t(hold['expires_at'])},"
              f" captured {hold['captured_minor']}, released {hold['released_minor']}")  # fmt: skip
    for request in requests:
        if request["kind"] != "refund":
            _print_request(request)
    if p["status"] in ("voided", "expired"):
        print(f"{p['status']:<9} at {_t(p['ended_at'])}: the hold was released")
    if p["declined_at"]:
        print(f"declined  at {_t(p['declined_at'])}  reasons: {'; '.join(p['decline_reasons'])}")
    if p["cleared_at"]:
        print(f"cleared   at {_t(p['cleared_at'])}  gross {p['gross_minor']}  fee {p['fee_minor']}"
              f"  net {p['net_minor']}"
              f"  journal {p['journal_id']}")  # fmt: skip
    for request in requests:
        if request["kind"] == "refund":
            _print_request(request)
    if p["refunded_minor"]:
        print(f"refunded  {p['refunded_minor']} of {p['gross_minor']} captured")
    if batch:
        print(
            f"batch     {batch['batch_id']} ({batch['status']}, cut-off {_t(batch['cutoff_at'])})"
            + (f", settled at {_t(p['settled_at'])}" if p["settled_at"] else "")
        )
    if entries:
        print("\nledger entries:")
        print(render_table([dict(e) for e in entries], ["kind", "journal_id", "account_id", "amount_minor"]))
    return 0


def _print_request(request: Any) -> None:
    """One capture, void or refund of the payment, as funds decided it."""
    reasons = f"  reasons: {'; '.join(request['reasons'])}" if request["reasons"] else ""
    refunded = (
        f"  fee back {request['fee_back_minor']}  net back {request['net_back_minor']}"
        f"  refunded so far {request['refunded_after_minor']}  batch {request['refund_batch'] or '-'}"
        if request["fee_back_minor"] is not None
        else ""
    )
    print(f"{request['kind']:<9} {request['request_id']} {request['status']} at {_t(request['decided_at'])}"
          f"  amount {request['amount_minor']}{reasons}{refunded}")  # fmt: skip


def _t(value: Any) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S}Z"


async def list_settlements(args: argparse.Namespace, settings: Settings) -> int:
    connection = await connect(settings, migrated=True)
    try:
        rows = await connection.fetch(
            f"""SELECT {", ".join(BATCH_COLUMNS)} FROM settlement_batches
                WHERE ($1::text IS NULL OR merchant_id = $1) AND ($2::text IS NULL OR status = $2)
                ORDER BY cycle_start DESC, batch_id LIMIT $3""",
            args.merchant,
            args.status,
            args.limit,
        )
    finally:
        await connection.close()
    data = [dict(r) for r in rows]
    print(to_json(data) if args.json else render_table(data, BATCH_COLUMNS))
    return 0


async def follow_settlements(args: argparse.Namespace, settings: Settings) -> int:
    connection = await connect(settings, migrated=True)
    seen: set[str] = set()
    try:
        while True:
            rows = await connection.fetch(
                f"""SELECT {", ".join(BATCH_COLUMNS)} FROM settlement_batches WHERE status = 'closed'
                    ORDER BY closed_at, batch_id"""
            )
            fresh = [dict(r) for r in rows if r["batch_id"] not in seen]
            if fresh:
                print(render_table(fresh, BATCH_COLUMNS), flush=True)
                seen.update(r["batch_id"] for r in fresh)
            if args.once:
                return 0
            await asyncio.sleep(args.interval)
    except asyncio.CancelledError:
        return 0
    finally:
        await connection.close()


async def list_dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    connection = await connect(settings, migrated=True)
    try:
        rows = await connection.fetch(
            """SELECT received_at, stage, origin_topic, origin_partition AS partition, origin_offset AS "offset",
                      field, rule, left(detail, 80) AS detail
               FROM dead_letters WHERE $1::text IS NULL OR stage = $1
               ORDER BY received_at DESC LIMIT $2""",
            args.stage,
            args.limit,
        )
    finally:
        await connection.close()
    columns = ["received_at", "stage", "origin_topic", "partition", "offset", "field", "rule", "detail"]
    print(render_table([dict(r) for r in rows], columns))
    return 0
