"""`paystream demo`: the whole pipeline on the local stack, ending with reconciliation."""

from __future__ import annotations

import argparse
from typing import Any

from paystream.db.pool import connect
from paystream.demo import DemoOptions, print_summary, run_demo
from paystream.prepare import prepare_environment
from paystream.reconcile import reconcile
from paystream.settings import Settings


def register(sub: Any) -> None:
    parser = sub.add_parser("demo", help="run the whole pipeline on generated payments and reconcile")
    parser.add_argument("--payments", type=int, default=10_000, help="payments to generate (default 10000)")
    parser.add_argument("--duplicates", type=int, default=100, help="payments sent twice (default 100)")
    parser.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    parser.add_argument("--no-stack", action="store_true", help="use the configured services as they are")
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.payments < 1 or args.duplicates < 0 or args.duplicates > args.payments:
        print("paystream: --payments must be >= 1 and 0 <= --duplicates <= --payments")
        return 2
    if not args.no_stack:
        from paystream.stack.services import ensure_stack

        await ensure_stack(settings)
    print("preparing: database schema, topics, demo accounts ...", flush=True)
    await prepare_environment(settings)
    report = await run_demo(settings, DemoOptions(args.payments, args.duplicates, args.seed))
    print_summary(report, report["kinds"], report["elapsed_s"])
    connection = await connect(settings)
    try:
        reconciled = await reconcile(connection)
    finally:
        await connection.close()
    print(f"\nreconcile: {len(reconciled.checked)} invariants checked")
    for violation in reconciled.failures():
        print(f"  VIOLATION {violation}")
    print("reconcile: " + ("PASS" if reconciled.ok else "FAIL"))
    return 0 if reconciled.ok else 1
