"""Latency bookkeeping: HDR percentiles in milliseconds, per-second series."""

from __future__ import annotations

import pytest

from paystream.loadtest.measure import LatencyRecorder, Timeline, new_histogram, summary_ms


def test_percentiles_in_milliseconds() -> None:
    histogram = new_histogram()
    for latency_us in range(1_000, 101_000, 1_000):  # 1 ms .. 100 ms
        histogram.record_value(latency_us)
    summary = summary_ms(histogram)
    assert summary["p50"] == pytest.approx(50, rel=0.01)
    assert summary["p90"] == pytest.approx(90, rel=0.01)
    assert summary["p99"] == pytest.approx(99, rel=0.01)
    assert summary["max"] == pytest.approx(100, rel=0.01)


def test_empty_histogram_reports_zeros() -> None:
    assert summary_ms(new_histogram()) == {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}


def test_timeline_rows_merge_series() -> None:
    recorder = LatencyRecorder()
    timeline = Timeline()
    recorder.record(0, 5_000)
    recorder.record(1, -3)  # clock skew: recorded at the 1 microsecond floor, not dropped
    timeline.count(timeline.published, 0, 2)
    timeline.count(timeline.completed, 1)
    timeline.lag["risk"] = {0: 7}
    rows = timeline.as_rows(recorder)
    assert [r["second"] for r in rows] == [0, 1]
    assert rows[0]["published"] == 2
    assert rows[0]["lag_risk"] == 7
    assert rows[1]["completed"] == 1
    assert recorder.count == 2


def test_nearest_rank_percentiles_of_a_list() -> None:
    from paystream.loadtest.measure import list_summary_ms

    values = [v * 1_000 for v in range(1, 101)]  # 1..100 ms
    assert list_summary_ms(values) == {"p50": 50.0, "p90": 90.0, "p99": 99.0, "max": 100.0}
    assert list_summary_ms([7_000]) == {"p50": 7.0, "p90": 7.0, "p99": 7.0, "max": 7.0}
