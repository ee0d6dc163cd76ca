"""`paystream accounts seed|show|list`: the demo world, and one account's balance and entries.

`seed` writes the demo's configuration (merchants, fee schedules, risk rules)
and publishes each demo payer's account requests (open, then deposit) to the
request topic: the workers open and fund the accounts, ahead of any payment
published later for the same payer.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from paystream.cli.args import ROWS, SEED, bounded_int
from paystream.cli.reach import require_kafka, require_topics
from paystream.db.pool import connect
from paystream.demo_data import build_world
from paystream.seed import seed_configuration
from paystream.seed_accounts import demo_account_requests, publish_account_requests
from paystream.settings import Settings
from paystream.tables import render_table
from schemas.accounts import AccountRequest, request_kind
from topology.topics import PAYMENTS_REQUESTED

ENTRIES_SHOWN = 20


def register(sub: Any) -> None:
    parser = sub.add_parser("accounts", help="accounts: seed the demo world, show, list")
    actions = parser.add_subparsers(dest="accounts_command", metavar="ACTION", required=True)
    seed = actions.add_parser(
        "seed", help="demo merchants, fee schedules and risk rules; publish the demo payers' open and deposit requests"
    )
    # Account ids carry six and three digits: payer-000000, merchant-000.
    seed.add_argument("--payers", type=bounded_int(10, 1_000_000), default=2_000)
    seed.add_argument("--merchants", type=bounded_int(2, 1_000), default=20)
    seed.add_argument("--seed", type=SEED, default=7)
    seed.add_argument(
        "--wait",
        type=bounded_int(0, 3_600),
        default=0,
        metavar="SECONDS",
        help="wait up to this long for running workers to apply the account requests (default 0: do not wait)",
    )
    seed.set_defaults(func=run_seed)
    show = actions.add_parser("show", help="one account: balance, held, available, recent entries")
    show.add_argument("account_id")
    show.set_defaults(func=run_show)
    listing = actions.add_parser("list", help="accounts, optionally of one kind")
    listing.add_argument(
        "--kind", choices=("customer", "merchant_pending", "fee_revenue", "payout_clearing", "funding")
    )
    listing.add_argument("--limit", type=ROWS, default=50)
    listing.set_defaults(func=run_list)


async def run_seed(args: argparse.Namespace, settings: Settings) -> int:
    world = build_world(args.payers, args.merchants, args.seed)
    await require_kafka(settings)
    connection = await connect(settings, migrated=True)
    try:
        await require_topics(settings, [PAYMENTS_REQUESTED])
        counts = await seed_configuration(connection, world)
    finally:
        await connection.close()
    print(f"configured: {counts.merchants} merchants, {counts.fee_schedules} fee schedules added")
    requests = demo_account_requests(world, datetime.now(UTC))
    await publish_account_requests(settings, requests)
    print(
        f"published: {len(requests)} account requests for {len(world.payers)} payers to"
        f" {settings.topic(PAYMENTS_REQUESTED)}; the workers open and fund the accounts (`paystream run`)"
    )
    if args.wait == 0:
        return 0
    applied = await wait_applied(settings, requests, args.wait)
    print(f"applied: {applied} of {len(requests)} account requests")
    return 0 if applied == len(requests) else 1


async def wait_applied(settings: Settings, requests: list[AccountRequest], timeout_s: int) -> int:
    """How many of the requests funds has applied, polled until all are or `timeout_s` passes."""
    kinds = [request_kind(r) for r in requests]
    ids = [r.request_id for r in requests]
    connection = await connect(settings, migrated=True)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            applied = int(
                await connection.fetchval(
                    """SELECT count(*) FROM account_operations o
                       JOIN unnest($1::text[], $2::text[]) AS v(kind, id) ON o.kind = v.kind AND o.request_id = v.id""",
                    kinds,
                    ids,
                )
            )
            if applied == len(requests) or time.monotonic() > deadline:
                return applied
            print(f"  applied {applied} of {len(requests)} ...", flush=True)
            await asyncio.sleep(1)
    finally:
        await connection.close()


async def run_show(args: argparse.Namespace, settings: Settings) -> int:
    connection = await connect(settings, migrated=True)
    try:
        account = await connection.fetchrow("SELECT * FROM accounts WHERE account_id = $1", args.account_id)
        if account is None:
            print(f"paystream: no account {args.account_id}")
            return 1
        entries = await connection.fetch(
            """SELECT e.created_at, e.journal_id, j.kind, e.amount_minor
               FROM entries e JOIN journals j USING (journal_id)
               WHERE e.account_id = $1 ORDER BY e.entry_id DESC LIMIT $2""",
            args.account_id,
            ENTRIES_SHOWN,
        )
        total = await connection.fetchval(
            "SELECT coalesce(sum(amount_minor), 0) FROM entries WHERE account_id = $1", args.account_id
        )
    finally:
        await connection.close()
    print(f"account   {account['account_id']} ({account['kind']}, {account['status']}, {account['currency']})")
    if account["kind"] == "customer":
        available = account["balance_minor"] - account["held_minor"]
        print(f"balance   {account['balance_minor']}  held {account['held_minor']}  available {available}")
    else:
        print(f"balance   {total}  (sum of entries: hot accounts are only appended to)")
    print(f"\nlast {ENTRIES_SHOWN} entries:")
    print(render_table([dict(e) for e in entries], ["created_at", "journal_id", "kind", "amount_minor"]))
    return 0


async def run_list(args: argparse.Namespace, settings: Settings) -> int:
    connection = await connect(settings, migrated=True)
    try:
        rows = await connection.fetch(
            """SELECT account_id, kind, currency, status, balance_minor, held_minor FROM accounts
               WHERE $1::text IS NULL OR kind = $1 ORDER BY account_id LIMIT $2""",
            args.kind,
            args.limit,
        )
    finally:
        await connection.close()
    print(render_table([dict(r) for r in rows], ["account_id", "kind", "currency", "status", "balance_minor",
                                                  "held_minor"]))  # fmt: skip
    return 0
