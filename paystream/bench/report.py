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

# The goals set for paystream against the two baselines (issue: benchmark against baselines).
GOAL_VS_NAIVE = 20.0
GOAL_VS_CEILING = 0.5
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
        "latency_ms": latency,
        "options": {k: str(v) for k, v in asdict(result.options).items()},
    }


def markdown(summary: dict[str, Any], machine: str) -> str:
    """The tables for docs/performance.md and the terminal."""
    options = summary["options"]
    medians = summary["throughput_per_s"]["median"]
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
    for system in ("paystream", "naive", "passthrough"):
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
    return "\n".join(lines)


def write_into_doc(path: Path, body: str) -> None:
    """Replace the generated region of the performance doc; the prose around it is kept."""
    text = path.read_text()
    begin, end = text.find(DOC_BEGIN), text.find(DOC_END)
    if begin < 0 or end < begin:
        raise PaystreamError(f"{path} has no {DOC_BEGIN} ... {DOC_END} region")
    path.write_text(text[: begin + len(DOC_BEGIN)] + "\n" + body + "\n" + text[end:])
