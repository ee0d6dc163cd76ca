"""`paystream bench`: paystream against a naive baseline and a pass-through ceiling, in one run."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from paystream.bench.history_load import HISTORY_PAYMENTS_MAX
from paystream.bench.history_report import run_history_command
from paystream.bench.report import machine_description, markdown, p99_agreement, summarise, write_into_doc
from paystream.bench.run import LATENCY_SYSTEMS, THROUGHPUT_SYSTEMS, BenchOptions, run_bench
from paystream.cli.args import bounded_float, bounded_int
from paystream.cli.reach import require_kafka
from paystream.errors import PaystreamError
from paystream.logging import quiet_client_logs
from paystream.settings import Settings
from paystream.stack.services import status

PERFORMANCE_DOC = Path("docs/performance.md")
ALL_SYSTEMS = tuple(dict.fromkeys(THROUGHPUT_SYSTEMS + LATENCY_SYSTEMS))


def _systems(text: str) -> tuple[str, ...]:
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [system for system in chosen if system not in ALL_SYSTEMS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(ALL_SYSTEMS)}")
    return chosen


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "bench", help="throughput vs a naive baseline, the database ceiling and a pass-through ceiling; latency"
    )
    defaults = BenchOptions()
    parser.add_argument(
        "--payments", type=bounded_int(1_000, 1_000_000), default=defaults.payments, help="backlog per throughput run"
    )
    parser.add_argument(
        "--naive-payments", type=bounded_int(100, 100_000), default=defaults.naive_payments, help="backlog, naive runs"
    )
    parser.add_argument(
        "--ceiling-payments",
        type=bounded_int(1_000, 5_000_000),
        default=defaults.ceiling_payments,
        help="backlog, pass-through runs",
    )
    parser.add_argument(
        "--repeat", type=bounded_int(1, 20), default=defaults.repeat, help="repetitions (medians are reported)"
    )
    parser.add_argument(
        "--rate", type=bounded_float(1, 100_000), default=defaults.rate_per_s, help="offered payments/s, latency runs"
    )
    parser.add_argument(
        "--latency-duration", type=bounded_float(1, 3_600), default=defaults.latency_duration_s, help="seconds"
    )
    parser.add_argument(
        "--only",
        type=_systems,
        default=(),
        metavar="SYSTEMS",
        help=f"comma-separated subset of {','.join(ALL_SYSTEMS)} (default all)",
    )
    parser.add_argument(
        "--settle-max",
        type=bounded_float(0, 600),
        default=defaults.settle_s_max,
        metavar="SECONDS",
        help="wait at most this long for a quiet machine before each run (0: do not wait)",
    )
    parser.add_argument(
        "--stage-processes",
        type=bounded_int(1, 8),
        default=defaults.stage_processes,
        help="paystream worker processes per stage",
    )
    parser.add_argument("--json", type=Path, default=Path("reports/bench-latest.json"), help="every run's figures")
    parser.add_argument("--write-doc", action="store_true", help=f"update the tables in {PERFORMANCE_DOC}")
    parser.add_argument(
        "--history",
        type=bounded_int(1_000, HISTORY_PAYMENTS_MAX),
        metavar="N",
        help="instead: the database ceiling and paystream on an empty database and on one holding N past payments"
        " (--payments each; the other options do not apply); writes reports/bench-history-N.json",
    )
    parser.set_defaults(func=run)


def _previous(path: Path) -> dict[str, Any] | None:
    """The last run's figures, to compare p99 across consecutive runs; None when absent or unreadable."""
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


async def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.history is not None:
        await require_kafka(settings)
        return await run_history_command(args, settings)
    if args.write_doc and (args.only or args.stage_processes != 1):
        raise PaystreamError(
            f"--write-doc records the full comparison; not with --only or --stage-processes (see {PERFORMANCE_DOC})"
        )
    await require_kafka(settings)
    options = BenchOptions(
        payments=args.payments,
        naive_payments=args.naive_payments,
        ceiling_payments=args.ceiling_payments,
        repeat=args.repeat,
        rate_per_s=args.rate,
        latency_duration_s=args.latency_duration,
        systems=args.only,
        stage_processes=args.stage_processes,
        settle_s_max=args.settle_max,
    )
    versions = [s.version for s in await status(settings) if s.version]
    # The figures are the output: the Kafka client's retried warnings (a new
    # topic's leader not serving for a few milliseconds) stay in the workers' logs.
    with quiet_client_logs(logging.ERROR):
        result = await run_bench(options, settings)
    summary = summarise(result)
    machine = machine_description(versions)
    body = markdown(summary, machine)
    print()
    print(body)
    agreement = p99_agreement(_previous(args.json), summary)
    if agreement:
        print(f"\n{agreement}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    runs = {"throughput": [asdict(r) for r in result.throughput], "latency": [asdict(r) for r in result.latency]}
    args.json.write_text(json.dumps({"machine": machine, "summary": summary, "runs": runs}, indent=2))
    print(f"\nevery run's figures: {args.json}")
    if args.write_doc:
        write_into_doc(PERFORMANCE_DOC, body)
        print(f"updated {PERFORMANCE_DOC}")
    return 0
