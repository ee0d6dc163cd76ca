"""The benchmark's arithmetic and tables: rates, medians, ratios, the generated doc region."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paystream.bench.measure import median, ratio, sustained_rate_per_s
from paystream.bench.report import DOC_BEGIN, DOC_END, markdown, summarise, write_into_doc
from paystream.bench.run import BenchOptions, BenchResult, LatencyRun, ThroughputRun
from paystream.errors import PaystreamError


@given(
    count=st.integers(min_value=20, max_value=5_000),
    interval_s=st.floats(min_value=1e-4, max_value=10.0),
    offset_s=st.floats(min_value=0.0, max_value=1e6),
)
def test_evenly_spaced_completions_give_their_rate(count: int, interval_s: float, offset_s: float) -> None:
    times = [offset_s + i * interval_s for i in range(count)]
    assert sustained_rate_per_s(times) == pytest.approx(1 / interval_s, rel=1e-6)


def test_a_slow_start_and_a_slow_tail_are_not_the_sustained_rate() -> None:
    start_up = [0.0] * 5  # the first completions after a 10-second group join
    steady = [10.0 + i * 0.01 for i in range(90)]  # 100 per second
    tail = [steady[-1] + 5.0] * 5
    assert sustained_rate_per_s(start_up + steady + tail) == pytest.approx(100.0, rel=0.05)
    # Over the whole span the rate would be far lower: the window is what removes it.
    assert sustained_rate_per_s(start_up + steady + tail, low=0.0, high=1.0) < 10


def test_degenerate_inputs() -> None:
    assert sustained_rate_per_s([]) == 0.0
    assert sustained_rate_per_s([3.0]) == 0.0
    assert sustained_rate_per_s([3.0, 3.0, 3.0]) == math.inf
    assert median([]) == 0.0
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert ratio(10.0, 0.0) == 0.0
    assert ratio(10.0, 4.0) == 2.5


def _result() -> BenchResult:
    result = BenchResult(BenchOptions(repeat=3, payments=5_000, naive_payments=300))
    for rate in (2_000.0, 2_400.0, 2_200.0):
        result.throughput.append(ThroughputRun("paystream", 5_000, rate, 3.0))
    for rate in (50.0, 40.0, 45.0):
        result.throughput.append(ThroughputRun("naive", 300, rate, 7.0))
    for rate in (4_000.0, 4_400.0, 4_600.0):
        result.throughput.append(ThroughputRun("passthrough", 5_000, rate, 1.5))
    for p50 in (100.0, 300.0, 200.0):
        latency = {"p50": p50, "p90": 2 * p50, "p99": 3 * p50, "max": 4 * p50}
        result.latency.append(LatencyRun("paystream", 500.0, 10_000, 499.0, latency))
    return result


def test_summary_uses_medians_of_the_runs() -> None:
    summary = summarise(_result())
    assert summary["throughput_per_s"]["median"] == {"paystream": 2_200.0, "naive": 45.0, "passthrough": 4_400.0}
    assert summary["ratio_vs_naive"] == pytest.approx(2_200 / 45)
    assert summary["ratio_vs_ceiling"] == pytest.approx(0.5)
    assert summary["latency_ms"]["paystream"]["p50"] == 200.0
    assert summary["latency_ms"]["paystream"]["p99"] == 600.0


def test_the_table_states_figures_ratios_and_whether_each_goal_is_met() -> None:
    text = markdown(summarise(_result()), "2 cores")
    assert "| paystream | 2,200/s | 2,000, 2,400, 2,200 | 1.00x |" in text
    assert "| naive | 45/s | 50, 40, 45 | 48.89x |" in text
    assert "paystream / naive: **48.9x** (goal ≥ 20x: met)" in text
    assert "paystream / pass-through ceiling: **0.50** (goal ≥ 0.5: met)" in text
    assert "| paystream | 499/s | 200 ms | 400 ms | 600 ms | 800 ms |" in text


def test_a_missed_goal_says_so() -> None:
    result = _result()
    result.throughput = [r for r in result.throughput if r.system != "naive"]
    result.throughput.append(ThroughputRun("naive", 300, 1_000.0, 1.0))
    assert "(goal ≥ 20x: not met)" in markdown(summarise(result), "2 cores")


def test_the_doc_region_is_replaced_and_the_prose_kept(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text(f"# Performance\n\nprose before\n\n{DOC_BEGIN}\nold table\n{DOC_END}\n\nprose after\n")
    write_into_doc(doc, "new table")
    text = doc.read_text()
    assert "old table" not in text
    assert f"{DOC_BEGIN}\nnew table\n{DOC_END}" in text
    assert text.startswith("# Performance\n\nprose before") and text.endswith("prose after\n")


def test_a_doc_without_the_region_is_an_error(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n")
    with pytest.raises(PaystreamError, match="no <!-- bench:begin -->"):
        write_into_doc(doc, "table")


def test_cpu_times_count_iowait_as_idle_and_sum_every_field() -> None:
    from paystream.bench.settle import cpu_times, idle_share

    before = cpu_times("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n")
    after = cpu_times("cpu  150 0 100 850 50 0 0 0 0 0\n")
    assert before == (850, 1000)
    assert after == (900, 1150)
    assert idle_share(before, after) == pytest.approx(50 / 150)
    assert idle_share(after, after) == 1.0


def test_rotated_starts_each_repetition_at_the_next_system() -> None:
    from paystream.bench.run import rotated

    systems = ("a", "b", "c")
    assert [rotated(systems, r) for r in (1, 2, 3, 4)] == [
        ["a", "b", "c"],
        ["b", "c", "a"],
        ["c", "a", "b"],
        ["a", "b", "c"],
    ]
