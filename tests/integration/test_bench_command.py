"""`paystream bench` end to end on the real stack, at a size that runs in seconds.

Timing is not asserted (a benchmark measures, a test checks): this checks that
each system really processed its whole backlog and that the figures and
ratios written are the ones computed from the runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paystream.cli.main import main


def test_bench_runs_every_system_and_reports_consistent_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "bench.json"
    argv = ["bench", "--payments", "1000", "--naive-payments", "100", "--ceiling-payments", "2000", "--repeat", "1"]
    # A test measures nothing: no waiting for a quiet machine (CI's is never quiet).
    argv += ["--rate", "200", "--latency-duration", "2", "--settle-max", "0", "--json", str(report)]
    assert main(argv) == 0

    data = json.loads(report.read_text())
    throughput = {run["system"]: run for run in data["runs"]["throughput"]}
    assert set(throughput) == {"paystream", "paystream+metrics", "naive", "passthrough", "dbceiling"}
    assert throughput["paystream+metrics"]["payments"] == 1000
    assert throughput["paystream"]["payments"] == 1000
    assert throughput["dbceiling"]["payments"] == 1000
    assert throughput["naive"]["payments"] == 100
    assert throughput["passthrough"]["payments"] == 2000
    assert all(run["rate_per_s"] > 0 and run["drain_s"] > 0 for run in throughput.values())

    summary = data["summary"]
    assert summary["ratio_vs_naive"] == pytest.approx(
        throughput["paystream"]["rate_per_s"] / throughput["naive"]["rate_per_s"]
    )
    assert summary["ratio_vs_ceiling"] == pytest.approx(
        throughput["paystream"]["rate_per_s"] / throughput["passthrough"]["rate_per_s"]
    )
    assert summary["ratio_vs_db_ceiling"] == pytest.approx(
        throughput["paystream"]["rate_per_s"] / throughput["dbceiling"]["rate_per_s"]
    )
    assert summary["ratio_metrics_on_vs_off"] == pytest.approx(
        throughput["paystream+metrics"]["rate_per_s"] / throughput["paystream"]["rate_per_s"]
    )
    # Latency runs come first in a repetition, then the throughput runs; each names the run before it.
    order = [run["preceded_by"] for run in data["runs"]["latency"] + data["runs"]["throughput"]]
    assert order[0] == "start"
    assert all(before.startswith(("latency ", "throughput ")) for before in order[1:])
    latency = {run["system"]: run for run in data["runs"]["latency"]}
    assert set(latency) == {"paystream", "passthrough"}
    for run in latency.values():
        assert run["payments"] == 400
        assert 0 < run["latency_ms"]["p50"] <= run["latency_ms"]["p99"] <= run["latency_ms"]["max"]

    printed = capsys.readouterr().out
    assert f"paystream / naive: **{summary['ratio_vs_naive']:.1f}x**" in printed
