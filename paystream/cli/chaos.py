"""`paystream chaos`: kill workers, restart Kafka and PostgreSQL, rescale, then prove nothing was lost."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from paystream.chaos.run import ChaosOptions, render_report, report_dict, run_chaos
from paystream.cli.args import SEED, bounded_float, bounded_int, positive_int
from paystream.cli.reach import require_kafka
from paystream.logging import quiet_client_logs
from paystream.settings import Settings
from workers import STAGE_NAMES


def register(sub: Any) -> None:
    parser = sub.add_parser("chaos", help="fault-injection run with a seeded schedule and a full check")
    parser.add_argument(
        "--payments", type=positive_int(1_000_000), default=20_000, help="payments to publish (default 20000)"
    )
    parser.add_argument(
        "--accounts",
        type=bounded_int(0, 10_000),
        default=40,
        help="fresh accounts opened, funded, paid from, withdrawn from and closed during the run, plus a"
        " quarter as many rounds of deposits and withdrawals on demo payers (default 40; 0: payments only)",
    )
    parser.add_argument(
        "--lifecycle",
        type=bounded_int(0, 10_000),
        default=10,
        help="fresh accounts whose manual-capture payments are captured in full and in part, voided and left to"
        " expire, and as many whose payments are refunded in part, in full, over and twice once cleared"
        " (default 10; 0: none)",
    )
    parser.add_argument(
        "--duration",
        type=bounded_float(0, 86_400, above_low=True),
        default=120.0,
        help="seconds of faults (default 120)",
    )
    parser.add_argument("--seed", type=SEED, default=None, help="replay the schedule of an earlier run")
    parser.add_argument(
        "--kill-interval",
        type=bounded_float(0, 3_600, above_low=True),
        default=4.0,
        help="mean seconds between SIGKILLs",
    )
    parser.add_argument("--no-service-restarts", action="store_true", help="do not restart Kafka/PostgreSQL")
    parser.add_argument("--scale-stage", choices=STAGE_NAMES, default=None, help="stage scaled 1 -> 3 -> 1")
    parser.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace, settings: Settings) -> int:
    await require_kafka(settings)
    options = ChaosOptions(
        payments=args.payments,
        duration_s=args.duration,
        seed=args.seed,
        kill_interval_s=args.kill_interval,
        restart_services=not args.no_service_restarts,
        scale_stage=args.scale_stage,
        fresh_accounts=args.accounts,
        demo_payer_rounds=args.accounts // 4,
        capturing_accounts=args.lifecycle,
        refunding_accounts=args.lifecycle,
        work_dir=settings.stack_dir / "chaos",
    )
    # The run restarts the broker on purpose: its own publisher's connection
    # errors would bury the report (the workers' logs keep theirs).
    with quiet_client_logs():
        report = await run_chaos(options, settings)
    print(render_report(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report_dict(report), indent=2, default=str))
    return 0 if report.check is not None and report.check.ok else 1
