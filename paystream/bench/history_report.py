"""What `paystream bench --history N` prints and writes: both databases' figures, their ratios, the load."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from paystream.bench.history import GOAL_HISTORY_VS_EMPTY, HistoryOptions, HistoryResult, run_history_bench
from paystream.bench.history_load import duration_text
from paystream.bench.report import machine_description
from paystream.logging import quiet_client_logs
from paystream.settings import Settings
from paystream.stack.services import status

REPORTS_DIR = Path("reports")


def report_path(history_payments: int) -> Path:
    return REPORTS_DIR / f"bench-history-{history_payments}.json"


def _verdict(value: float) -> str:
    return "met" if value >= GOAL_HISTORY_VS_EMPTY else "not met"


def _mix(statuses: dict[str, int]) -> str:
    return ", ".join(f"{status} {count:,}" for status, count in sorted(statuses.items())) or "none"


def markdown(result: HistoryResult, machine: str) -> str:
    """The comparison table, the load's figures and the outcome mixes, for the terminal and the docs."""
    load = result.load
    assert load is not None, "no history was loaded"
    ratios = result.ratios()
    empty, history = result.empty, result.history
    n = result.options.history_payments
    rows_written = ", ".join(f"{table} {count:,}" for table, count in sorted(load.rows.items()))
    lines = [
        f"Machine: {machine}.",
        f"History: {n:,} past payments over 30 days ({load.last_day:,} of them in the last 24 hours),"
        f" loaded in {duration_text(load.load_s)} ({n / load.load_s:,.0f} payments/s, {load.rows_total:,} rows),"
        f" VACUUM ANALYZE {duration_text(load.vacuum_s)}; database {load.database_bytes / 2**30:.2f} GiB"
        f" (empty: {result.empty_database_bytes / 2**20:.0f} MiB).",
        f"Rows inserted: {rows_written}.",
        "",
        f"| {result.options.payments:,} payments | empty database | history of {n:,} | history ÷ empty"
        f" | goal ≥ {GOAL_HISTORY_VS_EMPTY:g} |",
        "| --- | ---: | ---: | ---: | --- |",
        f"| database ceiling (a process per stage) | {empty.ceiling_per_s:,.0f}/s | {history.ceiling_per_s:,.0f}/s"
        f" | {ratios['dbceiling']:.2f} | {_verdict(ratios['dbceiling'])} |",
        f"| paystream (four worker processes) | {empty.paystream_per_s:,.0f}/s | {history.paystream_per_s:,.0f}/s"
        f" | {ratios['paystream']:.2f} | {_verdict(ratios['paystream'])} |",
        "",
        "Outcomes of the measured payments (the same rules must meet them on both databases):",
        "",
        f"- database ceiling: empty {_mix(empty.ceiling_statuses)}; history {_mix(history.ceiling_statuses)}",
        f"- paystream: empty {_mix(empty.paystream_statuses)}; history {_mix(history.paystream_statuses)}",
    ]
    return "\n".join(lines)


def as_json(result: HistoryResult, machine: str) -> dict[str, Any]:
    return {
        "machine": machine,
        "options": {k: str(v) for k, v in asdict(result.options).items()},
        "load": asdict(result.load) if result.load else None,
        "empty_database_bytes": result.empty_database_bytes,
        "empty": asdict(result.empty),
        "history": asdict(result.history),
        "ratio_history_vs_empty": result.ratios(),
        "goal_history_vs_empty": GOAL_HISTORY_VS_EMPTY,
    }


async def run_history_command(args: argparse.Namespace, settings: Settings) -> int:
    """`paystream bench --history N`: run, print the table, write reports/bench-history-N.json."""
    options = HistoryOptions(history_payments=args.history, payments=args.payments)
    versions = [s.version for s in await status(settings) if s.version]
    with quiet_client_logs(logging.ERROR):
        result = await run_history_bench(options, settings)
    machine = machine_description(versions)
    print()
    print(markdown(result, machine))
    path = report_path(options.history_payments)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(as_json(result, machine), indent=2))
    print(f"\nevery figure: {path}")
    return 0
