"""Latency and lag bookkeeping for a load test: HDR histograms overall and per second."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

LATENCY_US_MAX = 600_000_000  # ten minutes: anything slower is a stall, recorded at the cap
SIGNIFICANT_DIGITS = 3
PERCENTILES = (50.0, 90.0, 99.0)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(1, LATENCY_US_MAX, SIGNIFICANT_DIGITS)


@dataclass
class LatencyRecorder:
    """End-to-end latency (creation -> outcome seen downstream), overall and per second of the run."""

    overall: HdrHistogram = field(default_factory=new_histogram)
    # Per-second values as plain lists: a new HdrHistogram per second cost ~90 ms of
    # CPU each (profiled), stolen from the pipeline under test.
    per_second: dict[int, list[int]] = field(default_factory=dict)

    def record(self, second: int, latency_us: int) -> None:
        value = max(1, min(latency_us, LATENCY_US_MAX))
        self.overall.record_value(value)
        self.per_second.setdefault(second, []).append(value)

    @property
    def count(self) -> int:
        return int(self.overall.get_total_count())


def list_summary_ms(values: list[int]) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds of raw microsecond values (nearest-rank percentiles)."""
    if not values:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(values)
    result = {f"p{int(p)}": ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] / 1000 for p in PERCENTILES}
    result["max"] = ordered[-1] / 1000
    return result


def summary_ms(histogram: HdrHistogram) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds."""
    if histogram.get_total_count() == 0:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    result = {f"p{int(p)}": histogram.get_value_at_percentile(p) / 1000 for p in PERCENTILES}
    result["max"] = histogram.get_max_value() / 1000
    return result


@dataclass
class Timeline:
    """Per-second series for the report and the chart."""

    published: dict[int, int] = field(default_factory=dict)
    completed: dict[int, int] = field(default_factory=dict)
    lag: dict[str, dict[int, int]] = field(default_factory=dict)
    # First outcomes per status and second: the mix the run really offered.
    statuses: dict[str, dict[int, int]] = field(default_factory=dict)

    def count(self, series: dict[int, int], second: int, n: int = 1) -> None:
        series[second] = series.get(second, 0) + n

    def count_status(self, status: str, second: int) -> None:
        self.count(self.statuses.setdefault(status, {}), second)

    def status_totals(self) -> dict[str, int]:
        return {status: sum(series.values()) for status, series in sorted(self.statuses.items())}

    def as_rows(self, latency: LatencyRecorder) -> list[dict[str, Any]]:
        seconds = sorted(set(self.published) | set(self.completed) | set(latency.per_second))
        rows = []
        for second in seconds:
            row: dict[str, Any] = {
                "second": second,
                "published": self.published.get(second, 0),
                "completed": self.completed.get(second, 0),
            }
            if second in latency.per_second:
                row.update({f"latency_ms_{k}": v for k, v in list_summary_ms(latency.per_second[second]).items()})
            for stage, series in self.lag.items():
                if second in series:
                    row[f"lag_{stage}"] = series[second]
            for status, series in self.statuses.items():
                if second in series:
                    row[f"outcome_{status}"] = series[second]
            rows.append(row)
        return rows
