"""The benchmark's tables: medians, every run's figure, ratios against the goals, the machine."""

from __future__ import annotations

import contextlib
import os
import platform
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from paystream.bench.measure import median, ratio
from paystream.bench.run import BenchResult
from paystream.errors import PaystreamError

# The goals set for paystream against the baselines (issues: benchmark against
# baselines; performance II).
GOAL_VS_NAIVE = 20.0
GOAL_VS_CEILING = 0.5
GOAL_VS_DB_CEILING = 0.85
GOAL_THROUGHPUT_PER_S = 9_000.0
# Metrics on may cost at most this share of throughput (issue: operating paystream).
METRICS_OVERHEAD_MAX = 0.05
# Two consecutive benchmark runs must agree on paystream's p99 within this share.
P99_AGREEMENT = 0.25
DOC_BEGIN = "<!-- bench:begin -->"
DOC_END = "<!-- bench:end -->"


def machine_description(versions: list[str]) -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError, IndexError, ValueError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, IndexError, ValueError):
        kib = int(re.findall(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())[0])
        memory = f", {kib / 1024 / 1024:.0f} GiB"
    parts = [f"{os.cpu_count()} cores ({cpu}){memory}", f"Python {platform.python_version()}", *versions]
    return "; ".join(parts)


def summarise(result: BenchResult) -> dict[str, Any]:
    """Medians per system and the two ratios, from every run's figures."""
    rates: dict[str, list[float]] = {}
    for run in result.throughput:
        rates.setdefault(run.system, []).append(run.rate_per_s)
    medians = {system: median(values) for system, values in rates.items()}
    latency: dict[str, dict[str, float]] = {}
    for system in sorted({run.system for run in result.latency}):
        runs = [run for run in result.latency if run.system == system]
        latency[system] = {
            key: median([run.latency_ms[key] for run in runs]) for key in ("p50", "p90", "p99", "max")
        } | {"achieved_per_s": median([run.achieved_per_s for run in runs])}
    return {
        "throughput_per_s": {"median": medians, "runs": rates},
        "ratio_vs_naive": ratio(medians.get("paystream", 0.0), medians.get("naive", 0.0)),
        "ratio_vs_ceiling": ratio(medians.get("paystream", 0.0), medians.get("passthrough", 0.0)),
        "ratio_vs_db_ceiling": ratio(medians.get("paystream", 0.0), medians.get("dbceiling", 0.0)),
        "ratio_metrics_on_vs_off": ratio(medians.get("paystream+metrics", 0.0), medians.get("paystream", 0.0)),
        "latency_ms": latency,
        "latency_runs": [
            {"system": run.system, "p99": run.latency_ms["p99"], "preceded_by": run.preceded_by}
            for run in result.latency
        ],
        "options": {k: str(v) for k, v in asdict(result.options).items()},
    }


def markdown(summary: dict[str, Any], machine: str) -> str:
    """The tables for docs/performance.md and the terminal."""
    options = summary["options"]
    medians = summary["throughput_per_s"]["median"]
    paystream = medians.get("paystream", 0.0)
    db_ratio = summary.get("ratio_vs_db_ceiling", 0.0)
    runs = summary["throughput_per_s"]["runs"]
    lines = [
        f"Machine: {machine}.",
        f"Repetitions: {options['repeat']}; backlogs of {int(options['payments']):,} payments for paystream,"
        f" {int(options['naive_payments']):,} for the naive baseline and {int(options['ceiling_payments']):,}"
        " for the pass-through ceiling.",
        "",
        "| system | sustained throughput (median) | each run | paystream ÷ system |",
        "| --- | ---: | --- | ---: |",
    ]
    for system in ("paystream", "paystream+metrics", "naive", "dbceiling", "passthrough"):
        if system not in medians:
            continue
        each = ", ".join(f"{value:,.0f}" for value in runs[system])
        versus = ratio(medians.get("paystream", 0.0), medians[system])
        lines.append(f"| {system} | {medians[system]:,.0f}/s | {each} | {versus:.2f}x |")
    lines += [
        "",
        f"- paystream / naive: **{summary['ratio_vs_naive']:.1f}x** (goal ≥ {GOAL_VS_NAIVE:g}x:"
        f" {'met' if summary['ratio_vs_naive'] >= GOAL_VS_NAIVE else 'not met'})",
        f"- paystream / pass-through ceiling: **{summary['ratio_vs_ceiling']:.2f}**"
        f" (goal ≥ {GOAL_VS_CEILING:g}: {'met' if summary['ratio_vs_ceiling'] >= GOAL_VS_CEILING else 'not met'})",
        f"- paystream / database ceiling: **{db_ratio:.2f}**"
        f" (goal ≥ {GOAL_VS_DB_CEILING:g}: {'met' if db_ratio >= GOAL_VS_DB_CEILING else 'not met'})",
        *_metrics_line(summary.get("ratio_metrics_on_vs_off", 0.0)),
        f"- paystream throughput: **{paystream:,.0f}/s**"
        f" (goal ≥ {GOAL_THROUGHPUT_PER_S:,.0f}/s: {'met' if paystream >= GOAL_THROUGHPUT_PER_S else 'not met'})",
        "",
        f"Latency at {float(options['rate_per_s']):g} payments/s offered for {float(options['latency_duration_s']):g} s"
        " (creation to first outcome read downstream; medians over the repetitions):",
        "",
        "| system | achieved | p50 | p90 | p99 | max |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for system, figures in summary["latency_ms"].items():
        lines.append(
            f"| {system} | {figures['achieved_per_s']:,.0f}/s | {figures['p50']:,.0f} ms | {figures['p90']:,.0f} ms"
            f" | {figures['p99']:,.0f} ms | {figures['max']:,.0f} ms |"
        )
    runs_after = summary.get("latency_runs", [])
    if runs_after:
        lines += ["", "Each latency run's p99 and the run before it (order must not change the result):", ""]
        lines += [f"- {run['system']}: p99 {run['p99']:,.0f} ms after {run['preceded_by']}" for run in runs_after]
    return "\n".join(lines)


def _metrics_line(on_vs_off: float) -> list[str]:
    if on_vs_off <= 0:
        return []
    met = on_vs_off >= 1 - METRICS_OVERHEAD_MAX
    return [
        f"- metrics on ÷ metrics off: **{on_vs_off:.3f}** (goal ≥ {1 - METRICS_OVERHEAD_MAX:g}:"
        f" {'met' if met else 'not met'})"
    ]


def p99_agreement(previous: dict[str, Any] | None, summary: dict[str, Any]) -> str | None:
    """How paystream's median p99 compares with the previous run's (from its JSON), or None."""
    try:
        before = float(previous["summary"]["latency_ms"]["paystream"]["p99"]) if previous else 0.0
    except (KeyError, TypeError, ValueError):
        return None
    now = summary["latency_ms"].get("paystream", {}).get("p99", 0.0)
    if before <= 0 or now <= 0:
        return None
    change = abs(now - before) / before
    verdict = "agree" if change <= P99_AGREEMENT else "disagree"
    return (
        f"paystream p99 {now:,.0f} ms; previous run {before:,.0f} ms: {change:.0%} apart"
        f" ({verdict} within {P99_AGREEMENT:.0%})"
    )


def write_into_doc(path: Path, body: str) -> None:
    """Replace the generated region of the performance doc; the prose around it is kept."""
    text = path.read_text()
    begin, end = text.find(DOC_BEGIN), text.find(DOC_END)
    if begin < 0 or end < begin:
        raise PaystreamError(f"{path} has no {DOC_BEGIN} ... {DOC_END} region")
    path.write_text(text[: begin + len(DOC_BEGIN)] + "\n" + body + "\n" + text[end:])
