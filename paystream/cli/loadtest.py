"""`paystream loadtest --rate R --duration D`: latency percentiles, throughput and lag under a fixed load."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from paystream.loadtest.report import write_reports
from paystream.loadtest.run import LoadOptions, run_loadtest
from paystream.settings import Settings


def register(sub: Any) -> None:
    parser = sub.add_parser("loadtest", help="offered load through the whole pipeline; latency, throughput, lag")
    parser.add_argument("--rate", type=float, required=True, help="payments per second offered")
    parser.add_argument("--duration", type=float, required=True, help="seconds of offered load")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="report folder (default reports/<run id>)")
    parser.add_argument("--keep-database", action="store_true", help="keep the run's database for inspection")
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.rate <= 0 or args.duration <= 0 or args.rate * args.duration > 5_000_000:
        print("paystream: --rate and --duration must be positive, and rate x duration at most 5,000,000")
        return 2
    options = LoadOptions(rate=args.rate, duration_s=args.duration, seed=args.seed, keep_database=args.keep_database)
    result = await run_loadtest(options, settings)
    data = result.as_dict()
    paths = write_reports(data, args.out or Path("reports") / result.run_id)
    latency = data["latency_ms"]
    print(
        f"offered {args.rate:g}/s for {args.duration:g} s: published {data['published']},"
        f" first outcome for {data['completed']}; throughput {data['throughput_per_s']:g}/s"
    )
    print(
        f"latency ms: p50 {latency['p50']:.1f}  p90 {latency['p90']:.1f}  p99 {latency['p99']:.1f}"
        f"  max {latency['max']:.1f}"
    )
    print("reports: " + ", ".join(str(p) for p in paths.values()))
    return 0 if data["completed"] == data["published"] else 1
