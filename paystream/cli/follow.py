"""`paystream follow outcomes|accounts|settlements`: results as downstream systems see them, each event once."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

from paystream.cli.args import IDLE_EXIT_MS
from paystream.cli.reach import require_kafka
from paystream.downstream import RESULT_TOPICS, follow
from paystream.settings import Settings

COLUMNS = {
    # payment.outcome and payment.refunded share the topic: a column one lacks shows "-".
    "outcomes": ("payment_id", "status", "stage", "amount_minor", "currency", "merchant_id", "refund_id", "reasons"),
    "accounts": ("kind", "request_id", "account_id", "status", "amount_minor", "currency", "reasons"),
    "settlements": ("batch_id", "merchant_id", "currency", "item_count", "gross_minor", "fee_minor", "net_minor"),
}


def register(sub: Any) -> None:
    parser = sub.add_parser("follow", help="follow payment outcomes, account request outcomes or settlement results")
    parser.add_argument("kind", choices=sorted(RESULT_TOPICS))
    parser.add_argument("--json", action="store_true", help="one JSON event per line")
    parser.add_argument("--from-beginning", action="store_true", help="start at the oldest retained event")
    parser.add_argument("--group", default=None, help="consumer group: resume where the last run stopped")
    parser.add_argument("--idle-exit-ms", type=IDLE_EXIT_MS, default=None, help="stop after this long without events")
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace, settings: Settings) -> int:
    columns = COLUMNS[args.kind]
    await require_kafka(settings)
    if not args.json:
        print("  ".join(columns), flush=True)
    count = 0
    async for delivered in follow(settings, args.kind, args.group, args.from_beginning, None, args.idle_exit_ms):
        count += 1
        if args.json:
            sys.stdout.write(msgspec.json.encode(delivered.event).decode() + "\n")
        else:
            values = msgspec.to_builtins(delivered.event)
            print("  ".join(_cell(values.get(c)) for c in columns), flush=True)
    print(f"{count} events", file=sys.stderr)
    return 0


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return "; ".join(str(v) for v in value) or "-"
    return "-" if value is None else str(value)
