"""`paystream accounts seed|show|list`: the demo world, and one account's balance and entries."""

from __future__ import annotations

import argparse
from typing import Any

from paystream.cli.args import ROWS, SEED, bounded_int
from paystream.db.pool import connect
from paystream.demo_data import build_world
from paystream.seed import seed_world
from paystream.settings import Settings
from paystream.tables import render_table

ENTRIES_SHOWN = 20


def register(sub: Any) -> None:
    parser = sub.add_parser("accounts", help="accounts: seed the demo world, show, list")
    actions = parser.add_subparsers(dest="accounts_command", metavar="ACTION", required=True)
    seed = actions.add_parser("seed", help="write demo payers, merchants, fee schedules and risk rules (idempotent)")
    # Account ids carry six and three digits: payer-000000, merchant-000.
    seed.add_argument("--payers", type=bounded_int(10, 1_000_000), default=2_000)
    seed.add_argument("--merchants", type=bounded_int(2, 1_000), default=20)
    seed.add_argument("--seed", type=SEED, default=7)
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
    connection = await connect(settings, migrated=True)
    try:
        counts = await seed_world(connection, build_world(args.payers, args.merchants, args.seed))
    finally:
        await connection.close()
    print(f"seeded: {counts}" if counts.payers or counts.merchants else "seeded: nothing new (already seeded)")
    return 0


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
