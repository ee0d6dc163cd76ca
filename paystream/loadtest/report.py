"""Load-test reports: JSON for machines, a PNG chart and a Markdown summary for people."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson


def write_reports(data: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "loadtest.json",
        "png": out_dir / "loadtest.png",
        "markdown": out_dir / "loadtest.md",
    }
    paths["json"].write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    write_chart(data, paths["png"])
    paths["markdown"].write_text(markdown_summary(data, paths["png"].name))
    return paths


def write_chart(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    rows = data["timeline"]
    seconds = [row["second"] for row in rows]
    figure, (latency_axis, rate_axis, lag_axis) = plt.subplots(3, 1, figsize=(10, 10), sharex=True)
    for key in ("p50", "p90", "p99"):
        points = [(row["second"], row[f"latency_ms_{key}"]) for row in rows if f"latency_ms_{key}" in row]
        latency_axis.plot([p[0] for p in points], [p[1] for p in points], label=key)
    latency_axis.set_ylabel("latency (ms)")
    latency_axis.set_title(
        f"paystream load test: {data['rate_offered_per_s']:g}/s offered for {data['duration_s']:g} s"
    )
    latency_axis.legend()
    rate_axis.plot(seconds, [row["published"] for row in rows], label="published/s")
    rate_axis.plot(seconds, [row["completed"] for row in rows], label="first outcome/s")
    rate_axis.set_ylabel("payments per second")
    rate_axis.legend()
    stages = sorted({key[4:] for row in rows for key in row if key.startswith("lag_")})
    for stage in stages:
        points = [(row["second"], row[f"lag_{stage}"]) for row in rows if f"lag_{stage}" in row]
        lag_axis.plot([p[0] for p in points], [p[1] for p in points], label=stage)
    lag_axis.set_ylabel("consumer lag (records)")
    lag_axis.set_xlabel("seconds since start")
    lag_axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _warmup_lines(warmup: dict[str, Any] | None) -> list[str]:
    if not warmup or not warmup.get("published"):
        return []
    latency = warmup["latency_ms"]
    return [
        f"Warm-up before the measurement (not in the figures above): {warmup['duration_s']:g} s,"
        f" {warmup['published']} payments, p50 {latency['p50']:.1f} ms, p99 {latency['p99']:.1f} ms,"
        f" max {latency['max']:.1f} ms.",
        "",
    ]


def markdown_summary(data: dict[str, Any], chart_name: str) -> str:
    latency = data["latency_ms"]
    max_lag = {
        key[4:]: max(row[key] for row in data["timeline"] if key in row)
        for key in {k for row in data["timeline"] for k in row if k.startswith("lag_")}
    }
    lines = [
        f"# Load test {data['run_id']}",
        "",
        f"- offered: {data['rate_offered_per_s']:g} payments/s for {data['duration_s']:g} s"
        f" (achieved {data['publish_rate_achieved_per_s']:g}/s)",
        f"- published {data['published']}, first outcome seen for {data['completed']}",
        f"- throughput over the run: {data['throughput_per_s']:g} payments/s ({data['total_s']:g} s)",
        f"- workers: {data.get('workers', 'inprocess')}; payers in the synthetic world: {data.get('payers', 0):,}",
        "- first outcomes: " + ", ".join(f"{status} {count}" for status, count in data.get("outcomes", {}).items()),
        "",
        "| latency (creation → first outcome seen downstream) | ms |",
        "| --- | ---: |",
        *[f"| {key} | {value:.1f} |" for key, value in latency.items()],
        "",
        *_warmup_lines(data.get("warmup")),
        "| stage | max consumer lag (records) |",
        "| --- | ---: |",
        *[f"| {stage} | {lag} |" for stage, lag in sorted(max_lag.items())],
        "",
        f"![latency, throughput and lag over time]({chart_name})",
        "",
    ]
    return "\n".join(lines)
