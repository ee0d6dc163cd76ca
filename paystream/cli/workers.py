"""`paystream worker STAGE` (one stage per process) and `paystream run` (all stages)."""

from __future__ import annotations

import argparse
from typing import Any

from paystream.cli.args import IDLE_EXIT_MS
from paystream.runner import run_stages
from paystream.settings import Settings
from workers import STAGE_NAMES


def register(sub: Any) -> None:
    worker = sub.add_parser("worker", help="run one stage (one process per stage)")
    worker.add_argument("stage", choices=STAGE_NAMES)
    _add_burst(worker)
    worker.set_defaults(func=run_worker)
    run = sub.add_parser("run", help="run every stage in this process")
    run.add_argument("--stages", default=",".join(STAGE_NAMES), help="comma-separated subset")
    _add_burst(run)
    run.set_defaults(func=run_all)


def _add_burst(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--idle-exit-ms",
        type=IDLE_EXIT_MS,
        default=None,
        help="burst mode: return once no record arrived for this long",
    )


async def run_worker(args: argparse.Namespace, settings: Settings) -> int:
    await run_stages(settings, [args.stage], idle_exit_ms=args.idle_exit_ms)
    return 0


async def run_all(args: argparse.Namespace, settings: Settings) -> int:
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGE_NAMES]
    if unknown:
        print(f"paystream: unknown stage(s) {', '.join(unknown)}; stages: {', '.join(STAGE_NAMES)}")
        return 2
    await run_stages(settings, stages, idle_exit_ms=args.idle_exit_ms)
    return 0
