"""`paystream demo`: the whole pipeline on the local stack, ending with reconciliation."""

from __future__ import annotations

import argparse
import socket
from typing import Any

from paystream.cli.args import SEED, bounded_float, bounded_int, positive_int
from paystream.cli.reach import require_kafka
from paystream.db.pool import connect
from paystream.demo import MANUAL_PERCENT_DEFAULT, REFUND_PERCENT_DEFAULT, DemoOptions, print_summary, run_demo
from paystream.errors import PaystreamError
from paystream.prepare import prepare_environment
from paystream.reconcile import reconcile
from paystream.settings import Settings

PAYMENTS_MAX = 1_000_000
DEMO_METRICS_PORT = 9400


def register(sub: Any) -> None:
    parser = sub.add_parser("demo", help="run the whole pipeline on generated payments and reconcile")
    parser.add_argument(
        "--payments", type=positive_int(PAYMENTS_MAX), default=10_000, help="payments to generate (default 10000)"
    )
    parser.add_argument(
        "--duplicates", type=bounded_int(0, PAYMENTS_MAX), default=100, help="payments sent twice (default 100)"
    )
    parser.add_argument(
        "--manual-percent",
        type=bounded_float(0, 100),
        default=MANUAL_PERCENT_DEFAULT,
        help="share of the ordinary payments that are manual captures: captured in full or in part, voided or left"
        f" to expire (default {MANUAL_PERCENT_DEFAULT:g})",
    )
    parser.add_argument(
        "--refund-percent",
        type=bounded_float(0, 100),
        default=REFUND_PERCENT_DEFAULT,
        help="share of the settled payments refunded afterwards: in part, in full, and one over-refund"
        f" (default {REFUND_PERCENT_DEFAULT:g})",
    )
    parser.add_argument("--seed", type=SEED, default=1, help="generator seed (default 1)")
    parser.add_argument("--no-stack", action="store_true", help="use the configured services as they are")
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.duplicates > args.payments:
        raise PaystreamError(f"--duplicates {args.duplicates} is more than --payments {args.payments}")
    if not args.no_stack:
        from paystream.stack.services import ensure_stack

        await ensure_stack(settings)
    else:
        await require_kafka(settings)
    print("preparing: database schema, topics, demo accounts ...", flush=True)
    # The demo payers' accounts are opened and funded through the pipeline, ahead of their payments.
    await prepare_environment(settings, publish_accounts=True)
    options = DemoOptions(
        payments=args.payments,
        duplicates=args.duplicates,
        seed=args.seed,
        manual_percent=args.manual_percent,
        refund_percent=args.refund_percent,
    )
    # The demo's own process serves /metrics while it runs, like a worker.
    settings = settings.with_overrides(metrics_port=settings.metrics_port or demo_metrics_port())
    print(where_to_look_while_running(settings), flush=True)
    report = await run_demo(settings, options)
    print_summary(report, report["kinds"], report["elapsed_s"])
    connection = await connect(settings)
    try:
        reconciled = await reconcile(connection, hold_open_s_max=settings.hold_open_s_max)
    finally:
        await connection.close()
    print(f"\nreconcile: {len(reconciled.checked)} invariants checked")
    for violation in reconciled.failures():
        print(f"  VIOLATION {violation}")
    print("reconcile: " + ("PASS" if reconciled.ok else "FAIL"))
    print(where_to_look_next(settings))
    return 0 if reconciled.ok else 1


def demo_metrics_port() -> int:
    """9400 (the port docker-compose.yml gives every worker) when free here, else any free port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", DEMO_METRICS_PORT))
        except OSError:
            probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def where_to_look_while_running(settings: Settings) -> str:
    base = f"http://{settings.metrics_host}:{settings.metrics_port}"
    return "\n".join(
        [
            "while it runs:",
            f"  metrics   {base}/metrics   (health: {base}/healthz, readiness: {base}/readyz)",
            "  progress  paystream status   (in another terminal: lag, members, throughput per stage)",
        ]
    )


def where_to_look_next(settings: Settings) -> str:
    views = f"http://{settings.views_host}:{settings.views_port}"
    return "\n".join(
        [
            "\nwhere to look next:",
            "  paystream status                  lag, members and throughput per stage (--watch 2 to follow)",
            f"  paystream views                   live per-merchant windows: {views}/platform/live,"
            f" {views}/merchants/<id>/live",
            "  PAYSTREAM_METRICS_PORT=9401 paystream worker risk   a worker with /metrics, /healthz and /readyz",
            "  paystream payment show <id>       one payment's timeline",
        ]
    )
