"""`paystream risk limits show|set`, `risk block|unblock|list`, `risk history`: the risk configuration.

Every change goes through paystream/risk_config.py: validated, written with
its audit row in one transaction, and read by the risk stage at its next
batch. A changing command records `--operator` (default: the OS user).

Exit status: 0 done (a no-op says so and is not recorded); 1 the answer is
no (`unblock` of an entry not blocked, `limits show --currency` of a currency
without limits); 2 bad input (one line) or an operating error.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from paystream.cli.args import ROWS, bounded_int
from paystream.db.pool import connect
from paystream.risk_config import (
    BLOCK_KINDS,
    LIMIT_FIELD_NAMES,
    LIMIT_FIELDS,
    NotBlockedError,
    RiskConfigError,
    block,
    block_entry,
    check_currency,
    check_operator,
    default_operator,
    describe_change,
    history,
    list_blocked,
    set_limits,
    show_limits,
    unblock,
    unblock_key,
)
from paystream.settings import Settings
from paystream.tables import render_table

LISTED_DEFAULT = 50
HISTORY_DEFAULT = 50


def currency_code(text: str) -> str:
    """argparse type: a currency paystream knows, refused with the usage line otherwise."""
    try:
        return check_currency(text)
    except RiskConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def operator_name(text: str) -> str:
    try:
        return check_operator(text)
    except RiskConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def register(sub: Any) -> None:
    parser = sub.add_parser("risk", help="risk configuration: limits per currency, blocklist, change history")
    actions = parser.add_subparsers(dest="risk_command", metavar="ACTION", required=True)

    limits = actions.add_parser("limits", help="risk limits per currency: show, set")
    limit_actions = limits.add_subparsers(dest="limits_command", metavar="ACTION", required=True)
    show = limit_actions.add_parser("show", help="every currency's limits, or one currency's")
    show.add_argument("--currency", type=currency_code)
    show.set_defaults(func=run_limits_show)
    setter = limit_actions.add_parser(
        "set",
        help="set one or more limits of a currency (creating a currency's limits needs all six)",
        description="Amounts are in the currency's minor units (cents for USD, yen for JPY).",
    )
    setter.add_argument("currency", type=currency_code, metavar="CURRENCY")
    for field in LIMIT_FIELDS:
        unit = "a count" if field.name.endswith("_count_max") else "minor units"
        setter.add_argument(
            field.option, dest=field.name, type=bounded_int(1, field.high), help=f"{field.name}, {unit}"
        )
    _operator_option(setter)
    setter.set_defaults(func=run_limits_set)

    blocker = actions.add_parser("block", help="reject the payments of a payer, merchant or country")
    blocker.add_argument("kind", choices=BLOCK_KINDS, metavar="KIND", help="payer, merchant or country")
    blocker.add_argument("value", metavar="VALUE", help="a payer or merchant id, or a two-letter country code")
    blocker.add_argument("--reason", required=True, help="why (shown in each rejection: blocked_<kind>: <reason>)")
    _operator_option(blocker)
    blocker.set_defaults(func=run_block)

    unblocker = actions.add_parser("unblock", help="remove an entry from the blocklist")
    unblocker.add_argument("kind", choices=BLOCK_KINDS, metavar="KIND", help="payer, merchant or country")
    unblocker.add_argument("value", metavar="VALUE")
    _operator_option(unblocker)
    unblocker.set_defaults(func=run_unblock)

    listing = actions.add_parser("list", help="the blocklist, optionally of one kind")
    listing.add_argument("--kind", choices=BLOCK_KINDS)
    listing.add_argument("--limit", type=ROWS, default=LISTED_DEFAULT)
    listing.set_defaults(func=run_list)

    changes = actions.add_parser("history", help="risk configuration changes, newest first")
    changes.add_argument("--limit", type=ROWS, default=HISTORY_DEFAULT)
    changes.add_argument("--subject", help="one currency (USD) or blocklist entry (payer:payer-000001)")
    changes.set_defaults(func=run_history)


def _operator_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--operator", type=operator_name, metavar="NAME", help="who makes the change (default: the OS user)"
    )


async def run_limits_show(args: argparse.Namespace, settings: Settings) -> int:
    connection = await connect(settings, migrated=True)
    try:
        rows = await show_limits(connection, args.currency)
    finally:
        await connection.close()
    if args.currency is not None and not rows:
        print(f"paystream: no risk limits for {args.currency}: its payments are rejected (currency_not_configured)")
        return 1
    print(render_table([{"currency": r.currency, **r.values()} for r in rows], ["currency", *LIMIT_FIELD_NAMES]))
    return 0


async def run_limits_set(args: argparse.Namespace, settings: Settings) -> int:
    wanted = {name: getattr(args, name) for name in LIMIT_FIELD_NAMES if getattr(args, name) is not None}
    if not wanted:
        raise RiskConfigError(f"nothing to set: give at least one of {', '.join(f.option for f in LIMIT_FIELDS)}")
    operator = args.operator or default_operator()
    connection = await connect(settings, migrated=True)
    try:
        change = await set_limits(connection, args.currency, wanted, operator)
    finally:
        await connection.close()
    if not change.changed:
        print(f"{args.currency} limits unchanged: every value given is already set (nothing recorded)")
    elif change.old is None:
        print(
            f"{args.currency} limits created by {operator} (change {change.change_id}):"
            f" {describe_change(None, change.new.values())}"
        )
    else:
        print(
            f"{args.currency} limits changed by {operator} (change {change.change_id}):"
            f" {describe_change(change.old.values(), change.new.values())}"
        )
    return 0


async def run_block(args: argparse.Namespace, settings: Settings) -> int:
    entry = block_entry(args.kind, args.value, args.reason)  # bad input is refused before connecting
    operator = args.operator or default_operator()
    connection = await connect(settings, migrated=True)
    try:
        change = await block(connection, entry.kind, entry.value, entry.reason, operator)
    finally:
        await connection.close()
    entry = change.entry
    if not change.changed:
        print(f"{entry.kind} {entry.value} is already blocked with this reason (nothing recorded)")
    elif change.old_reason is None:
        print(f"blocked {entry.kind} {entry.value} by {operator} (change {change.change_id}): {entry.reason}")
    else:
        print(
            f"{entry.kind} {entry.value} was blocked already; reason changed by {operator}"
            f" (change {change.change_id}): {change.old_reason!r} -> {entry.reason!r}"
        )
    return 0


async def run_unblock(args: argparse.Namespace, settings: Settings) -> int:
    kind, value = unblock_key(args.kind, args.value)  # bad input is refused before connecting
    operator = args.operator or default_operator()
    connection = await connect(settings, migrated=True)
    try:
        entry, change_id = await unblock(connection, kind, value, operator)
    except NotBlockedError as error:
        print(f"paystream: {error}", file=sys.stderr)
        return 1
    finally:
        await connection.close()
    print(f"unblocked {entry.kind} {entry.value} by {operator} (change {change_id}); it was: {entry.reason}")
    return 0


async def run_list(args: argparse.Namespace, settings: Settings) -> int:
    connection = await connect(settings, migrated=True)
    try:
        entries, more = await list_blocked(connection, args.kind, args.limit)
    finally:
        await connection.close()
    rows = [{"kind": e.kind, "value": e.value, "reason": e.reason} for e in entries]
    print(render_table(rows, ["kind", "value", "reason"]))
    if more:
        print(f"(the first {args.limit:,} shown; raise --limit to see more)")
    return 0


async def run_history(args: argparse.Namespace, settings: Settings) -> int:
    connection = await connect(settings, migrated=True)
    try:
        changes = await history(connection, args.limit, args.subject)
    finally:
        await connection.close()
    rows = [
        {
            "change_id": c.change_id,
            "changed_at": c.changed_at,
            "operator": c.operator,
            "action": c.action,
            "subject": c.subject,
            "change": describe_change(c.old_value, c.new_value),
        }
        for c in changes
    ]
    print(render_table(rows, ["change_id", "changed_at", "operator", "action", "subject", "change"]))
    return 0
