"""`paystream merchants add|update|suspend|resume|show|list|import`: onboarding and configuration.

Every value is validated by the parser (`paystream.merchants.model`) before
anything connects: a bad one is argparse's usage and one line, exit 2. A
refusal by the database's state (an unknown merchant, a different merchant
under the id being added, refused import lines) is one line on stderr and
exit 1. docs/merchants.md describes the commands and the CSV format.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from paystream.cli.args import ROWS
from paystream.db.pool import connect
from paystream.errors import PaystreamError
from paystream.merchants.csv_import import import_merchants, read_merchants_csv
from paystream.merchants.model import (
    MerchantInputError,
    check_currency,
    check_merchant_id,
    check_name,
    describe_cycle,
    merchant_spec,
    parse_cycle,
    parse_fee,
)
from paystream.merchants.store import (
    KEEP,
    Merchant,
    MerchantChange,
    MerchantRefused,
    add,
    fetch_merchants,
    list_merchants,
    open_batches,
    set_status,
    update,
)
from paystream.settings import Settings
from paystream.tables import render_table, to_json

T = TypeVar("T")
OPEN_BATCHES_SHOWN = 20
CYCLE_HELP = "'daily HH:00 Area/Location', 'hourly', 'seconds N' or 'default' (PAYSTREAM_SETTLEMENT_CYCLE_S)"
FEE_METAVAR = "CUR:BPS[:FIXED[:MIN]]"


def _checked(check: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type from a model check: its `<field>: <reason>` becomes the argument's error."""

    def parse(text: str) -> T:
        try:
            return check(text)
        except MerchantInputError as error:
            raise argparse.ArgumentTypeError(str(error)) from error

    return parse


def register(sub: Any) -> None:
    parser = sub.add_parser("merchants", help="merchants: add, update, suspend, resume, show, list, import")
    actions = parser.add_subparsers(dest="merchants_command", metavar="ACTION", required=True)

    adding = actions.add_parser("add", help="onboard a merchant with its fee schedules and settlement cycle")
    adding.add_argument("merchant_id", type=_checked(check_merchant_id))
    adding.add_argument("--name", required=True, type=_checked(check_name))
    adding.add_argument(
        "--fee", required=True, action="append", type=_checked(parse_fee), metavar=FEE_METAVAR,
        help="a fee schedule (repeat per currency): basis points, fixed and minimum fee in minor units",
    )  # fmt: skip
    adding.add_argument("--cycle", type=_checked(parse_cycle), default=None, help=f"settlement cycle: {CYCLE_HELP}")
    adding.set_defaults(func=run_add)

    updating = actions.add_parser("update", help="change a merchant's name, fee schedules or cycle")
    updating.add_argument("merchant_id", type=_checked(check_merchant_id))
    updating.add_argument("--name", type=_checked(check_name))
    updating.add_argument(
        "--fee", action="append", default=[], type=_checked(parse_fee), metavar=FEE_METAVAR,
        help="add or replace the fee schedule of a currency (repeatable)",
    )  # fmt: skip
    updating.add_argument(
        "--remove-fee", action="append", default=[], type=_checked(check_currency), metavar="CUR",
        help="stop accepting a currency (repeatable); at least one schedule must remain",
    )  # fmt: skip
    # Absent unless given (argparse would parse a string default): `default` is a cycle of its own.
    updating.add_argument(
        "--cycle", type=_checked(parse_cycle), default=argparse.SUPPRESS, help=f"new cycle: {CYCLE_HELP}"
    )
    updating.set_defaults(func=run_update)

    for action, status, text in (
        ("suspend", "suspended", "risk rejects its new payments; its open settlement batches still close"),
        ("resume", "active", "accept its payments again"),
    ):
        changing = actions.add_parser(action, help=f"{action} a merchant: {text}")
        changing.add_argument("merchant_id", type=_checked(check_merchant_id))
        changing.set_defaults(func=run_status, status=status)

    show = actions.add_parser("show", help="one merchant: fee schedules, cycle, open settlement batches")
    show.add_argument("merchant_id", type=_checked(check_merchant_id))
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=run_show)

    listing = actions.add_parser("list", help="merchants in id order")
    listing.add_argument("--status", choices=("active", "suspended"))
    listing.add_argument("--limit", type=ROWS, default=50)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=run_list)

    importing = actions.add_parser("import", help="onboard merchants from a CSV file (docs/merchants.md)")
    importing.add_argument("file", type=Path, metavar="FILE.csv")
    importing.add_argument("--quiet", action="store_true", help="no progress bar")
    importing.set_defaults(func=run_import)


def _refused(error: MerchantRefused) -> int:
    print(f"paystream: {error}", file=sys.stderr)
    return 1


async def run_add(args: argparse.Namespace, settings: Settings) -> int:
    spec = merchant_spec(args.merchant_id, args.name, args.fee, args.cycle)
    connection = await connect(settings, migrated=True)
    try:
        report = await add(connection, spec)
    except MerchantRefused as error:
        return _refused(error)
    finally:
        await connection.close()
    if report.added:
        print(
            f"added merchant {spec.merchant_id}: accepts {', '.join(spec.currencies)};"
            f" cycle {describe_cycle(spec.cycle)}; {report.accounts_opened} accounts opened"
        )
    else:
        print(f"merchant {spec.merchant_id} exists as given: nothing changed")
    return 0


async def run_update(args: argparse.Namespace, settings: Settings) -> int:
    change = MerchantChange(args.name, tuple(args.fee), tuple(args.remove_fee), getattr(args, "cycle", KEEP))
    if change == MerchantChange():
        raise PaystreamError("nothing to update: give --name, --fee, --remove-fee or --cycle")
    connection = await connect(settings, migrated=True)
    try:
        before, after = await update(connection, args.merchant_id, change)
    except MerchantRefused as error:
        return _refused(error)
    finally:
        await connection.close()
    if before == after:
        print(f"merchant {args.merchant_id} is already as given: nothing changed")
        return 0
    print(f"updated merchant {args.merchant_id}:")
    old, new = before.spec, after.spec
    if old.name != new.name:
        print(f"  name   {old.name!r} -> {new.name!r}")
    if old.fees != new.fees:
        print(f"  fees   {' '.join(f.describe() for f in old.fees)} -> {' '.join(f.describe() for f in new.fees)}")
    if old.cycle != new.cycle:
        print(f"  cycle  {describe_cycle(old.cycle)} -> {describe_cycle(new.cycle)}")
        print("  (open settlement batches keep their bounds; the new cycle applies from where they end)")
    return 0


async def run_status(args: argparse.Namespace, settings: Settings) -> int:
    connection = await connect(settings, migrated=True)
    try:
        changed = await set_status(connection, args.merchant_id, args.status)
    except MerchantRefused as error:
        return _refused(error)
    finally:
        await connection.close()
    if not changed:
        print(f"merchant {args.merchant_id} is already {args.status}: nothing changed")
    elif args.status == "suspended":
        print(f"suspended merchant {args.merchant_id}: risk rejects its new payments; open batches still close")
    else:
        print(f"resumed merchant {args.merchant_id}: its payments are accepted again")
    return 0


def _as_dict(merchant: Merchant) -> dict[str, Any]:
    spec = merchant.spec
    return {
        "merchant_id": spec.merchant_id,
        "name": spec.name,
        "status": merchant.status,
        "cycle": describe_cycle(spec.cycle),
        "currencies": list(spec.currencies),
        "fees": [
            {"currency": f.currency, "fee_bps": f.fee_bps, "fixed_minor": f.fixed_minor, "min_minor": f.min_minor}
            for f in spec.fees
        ],
        "created_at": merchant.created_at,
        "updated_at": merchant.updated_at,
    }


async def run_show(args: argparse.Namespace, settings: Settings) -> int:
    connection = await connect(settings, migrated=True)
    try:
        found = await fetch_merchants(connection, [args.merchant_id])
        batches = await open_batches(connection, args.merchant_id, OPEN_BATCHES_SHOWN) if found else []
    finally:
        await connection.close()
    merchant = found.get(args.merchant_id)
    if merchant is None:
        return _refused(MerchantRefused("merchant_id", f"no merchant {args.merchant_id}"))
    shown = _as_dict(merchant) | {"open_batches": batches}
    if args.json:
        print(to_json(shown))
        return 0
    print(f"merchant  {shown['merchant_id']} ({shown['status']})")
    print(f"name      {shown['name']}")
    print(f"cycle     {shown['cycle']}")
    print(f"created   {merchant.created_at.isoformat(timespec='seconds')}"
          f"  updated {merchant.updated_at.isoformat(timespec='seconds')}")  # fmt: skip
    print("\nfee schedules:")
    print(render_table(shown["fees"], ["currency", "fee_bps", "fixed_minor", "min_minor"]))
    print(f"\nopen settlement batches (first {OPEN_BATCHES_SHOWN}):")
    print(render_table(batches, ["batch_id", "currency", "cycle_start", "cycle_end", "cutoff_at", "items"]))
    return 0


async def run_list(args: argparse.Namespace, settings: Settings) -> int:
    connection = await connect(settings, migrated=True)
    try:
        merchants = await list_merchants(connection, args.status, args.limit)
    finally:
        await connection.close()
    rows = [_as_dict(m) for m in merchants]
    if args.json:
        print(to_json(rows))
        return 0
    print(render_table(rows, ["merchant_id", "status", "cycle", "currencies", "name"]))
    return 0


async def run_import(args: argparse.Namespace, settings: Settings) -> int:
    parsed = read_merchants_csv(args.file)
    candidates = sum(len(lines) for _, lines in parsed.merchants)
    connection = await connect(settings, migrated=True)
    progress = tqdm(total=candidates, unit="line", disable=args.quiet, file=sys.stderr, desc="importing")

    def advance(lines: int) -> None:
        progress.update(lines)

    try:
        report = await import_merchants(connection, parsed, advance)
    finally:
        progress.close()
        await connection.close()
    for refusal in report.refused:
        print(refusal, file=sys.stderr)
    print(
        f"imported {args.file}: {report.lines} lines; {report.applied_lines} applied ({report.added} merchants"
        f" added, {report.unchanged} unchanged, {report.accounts_opened} accounts opened);"
        f" {len(report.refused)} refused"
    )
    return 1 if report.refused else 0
