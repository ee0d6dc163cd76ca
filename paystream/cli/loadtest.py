"""`paystream loadtest --rate R --duration D | --from FILE`: latency percentiles, throughput and lag under load."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from paystream.cli.args import SEED, bounded_float
from paystream.cli.reach import require_kafka
from paystream.errors import PaystreamError
from paystream.loadtest.pipeline import WORKER_MODES
from paystream.loadtest.recorded import plan_recorded_load
from paystream.loadtest.report import write_reports
from paystream.loadtest.run import LoadOptions, run_loadtest
from paystream.settings import Settings

RATE_MAX = 100_000
DURATION_S_MAX = 86_400
PAYMENTS_MAX = 5_000_000


def register(sub: Any) -> None:
    parser = sub.add_parser("loadtest", help="offered load through the whole pipeline; latency, throughput, lag")
    parser.add_argument(
        "--rate",
        type=bounded_float(0, RATE_MAX, above_low=True),
        required=True,
        help="payments per second offered (mean, with --from)",
    )
    parser.add_argument(
        "--duration",
        type=bounded_float(0, DURATION_S_MAX, above_low=True),
        default=None,
        help="seconds of offered load (not with --from)",
    )
    parser.add_argument(
        "--from",
        dest="recording",
        type=Path,
        default=None,
        metavar="FILE",
        help="offer a `paystream replay record` file's payments (new ids), recorded gaps scaled to a mean of --rate",
    )
    parser.add_argument(
        "--warmup",
        type=bounded_float(0, 600),
        default=LoadOptions.warmup_s,
        metavar="SECONDS",
        help="load at --rate before the measurement, reported apart (0: none)",
    )
    parser.add_argument(
        "--workers",
        choices=WORKER_MODES,
        default=LoadOptions.workers,
        help="the stages as four worker processes (as in production) or in this process",
    )
    parser.add_argument("--seed", type=SEED, default=1)
    parser.add_argument("--out", type=Path, default=None, help="report folder (default reports/<run id>)")
    parser.add_argument("--keep-database", action="store_true", help="keep the run's database and topics")
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.recording is not None:
        return await _run_recorded(args, settings)
    if args.duration is None:
        raise PaystreamError("--duration is required, unless --from FILE gives the payments")
    if args.rate * args.duration > PAYMENTS_MAX:
        raise PaystreamError(
            f"--rate x --duration is {args.rate * args.duration:,.0f} payments; at most {PAYMENTS_MAX:,}"
        )
    options = LoadOptions(
        rate=args.rate,
        duration_s=args.duration,
        seed=args.seed,
        keep_database=args.keep_database,
        warmup_s=args.warmup,
        workers=args.workers,
    )
    return await _run_and_report(args, options, settings)


async def _run_recorded(args: argparse.Namespace, settings: Settings) -> int:
    if args.duration is not None:
        raise PaystreamError("--duration does not apply with --from: the recording sets how many payments go out")
    plan = plan_recorded_load(args.recording, args.rate)
    options = LoadOptions(
        rate=args.rate,
        duration_s=plan.duration_s,
        keep_database=args.keep_database,
        recording=plan,
        warmup_s=args.warmup,
        workers=args.workers,
    )
    if plan.rate_per_s_max is None:
        pace = f"recorded gaps divided by {plan.speed:.3g} for a mean of {args.rate:g}/s"
    else:
        pace = f"no time span recorded: sent evenly at {args.rate:g}/s"
    print(f"{args.recording}: {plan.records} records; {pace}, about {plan.duration_s:.1f} s")
    return await _run_and_report(args, options, settings)


async def _run_and_report(args: argparse.Namespace, options: LoadOptions, settings: Settings) -> int:
    await require_kafka(settings)
    print(
        f"load test: {options.workers} workers; {options.warmup_s:g} s warm-up at {options.rate:g}/s, then the"
        f" measurement ...",
        flush=True,
    )
    result = await run_loadtest(options, settings)
    data = result.as_dict()
    paths = write_reports(data, args.out or Path("reports") / result.run_id)
    latency = data["latency_ms"]
    print(
        f"offered {options.rate:g}/s for {options.duration_s:g} s: published {data['published']},"
        f" first outcome for {data['completed']}; throughput {data['throughput_per_s']:g}/s"
    )
    print(
        f"latency ms: p50 {latency['p50']:.1f}  p90 {latency['p90']:.1f}  p99 {latency['p99']:.1f}"
        f"  max {latency['max']:.1f}"
    )
    warmup = data["warmup"]
    if warmup["published"]:
        print(
            f"warm-up (not measured above): {warmup['published']} payments, p99 {warmup['latency_ms']['p99']:.1f}"
            f"  max {warmup['latency_ms']['max']:.1f} ms"
        )
    mix = ", ".join(f"{status} {count}" for status, count in data["outcomes"].items())
    print(f"outcomes ({data['payers']:,} payers): {mix}")
    print("reports: " + ", ".join(str(p) for p in paths.values()))
    return 0 if data["completed"] == data["outcomes_expected"] else 1
